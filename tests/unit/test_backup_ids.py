"""Backup ids never collide: a backup in the same second as another waits for the next one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.adapters.object_store import FileStore
from reconciler.backup.backing_up import _free_start
from reconciler.backup.backup_target import legacy_target
from reconciler.backup.manifests import backup_id
from reconciler.errors import BackupError


def ticking(start: datetime, step: timedelta) -> Iterator[datetime]:
    moment = start
    while True:
        yield moment
        moment += step


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def test_a_free_second_is_used_as_it_is(tmp_path: Path, no_sleep: list[float]) -> None:
    first = datetime(2026, 12, 1, 19, 7, 1, 250_000, tzinfo=UTC)
    started = _free_start(legacy_target(FileStore(tmp_path)), lambda: first, first=first)
    assert started == first
    assert no_sleep == []


def test_a_taken_second_waits_for_the_next(tmp_path: Path, no_sleep: list[float]) -> None:
    store = FileStore(tmp_path)
    first = datetime(2026, 12, 1, 19, 7, 1, 250_000, tzinfo=UTC)
    # The one before: complete, or killed half way (artifacts and no manifest).
    store.put_bytes(f"{backup_id(first)}/volumes/site.tar.zst", b"partial")
    clock = ticking(first + timedelta(seconds=1), timedelta(seconds=1))
    started = _free_start(legacy_target(store), lambda: next(clock), first=first)
    assert backup_id(started) == "2026-12-01T19-07-02Z"
    assert no_sleep == [pytest.approx(0.76)]  # to just past the next whole second


def test_a_clock_that_stands_still_is_an_error_not_a_hang(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    frozen = datetime(2026, 12, 1, 19, 7, 1, tzinfo=UTC)
    store.put_bytes(f"{backup_id(frozen)}/manifest.json", b"{}")
    with pytest.raises(BackupError, match="check the machine's clock"):
        _free_start(legacy_target(store), lambda: frozen, first=frozen)
