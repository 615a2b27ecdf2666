"""The stop journal without an engine: a file that does not parse, an engine that fails."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from reconciler.adapters.stack_control import StoppedRun
from reconciler.backup import stop_journal
from reconciler.errors import Unavailable


class FailingContainers:
    def get(self, _ident: str) -> Any:
        raise docker.errors.APIError("500 Server Error: engine restarting")


def write_one(state_dir: Path) -> None:
    run = StoppedRun(id="abc", name="site-web-1", started_at="2026-12-01T05:04:00Z", grace_s=10)
    stop_journal.StopJournal(state_dir).about_to_stop(run)


def test_an_engine_that_fails_keeps_the_journal_for_the_next_holder(tmp_path: Path) -> None:
    write_one(tmp_path)
    client: Any = SimpleNamespace(containers=FailingContainers())
    with pytest.raises(Unavailable, match="cannot start site-web-1 again"):
        stop_journal.finish_interrupted_stops(client, tmp_path)
    assert [e.name for e in stop_journal.read(tmp_path)] == ["site-web-1"]


def test_a_journal_that_does_not_parse_is_cleared_without_touching_anything(
    tmp_path: Path,
) -> None:
    (tmp_path / stop_journal.JOURNAL).write_text('{"containers": [{"id": 1}, "x"]')
    client: Any = SimpleNamespace(containers=FailingContainers())  # never called
    assert stop_journal.finish_interrupted_stops(client, tmp_path) == []
    assert not (tmp_path / stop_journal.JOURNAL).exists()


def test_clear_removes_the_previous_version_too(tmp_path: Path) -> None:
    write_one(tmp_path)
    write_one(tmp_path)  # a second write keeps a .prev
    stop_journal.clear(tmp_path)
    assert list(tmp_path.glob("backup-stops*")) == []
