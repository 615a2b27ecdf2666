"""Retention as tables: cases/retention/cases.yaml lists backups and what must stay."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.backup.manifests import id_time
from reconciler.decide.retention import BackupRef, RetentionRules, decide_retention

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "cases" / "retention" / "cases.yaml").read_text()
)


def refs(entries: list[str]) -> list[BackupRef]:
    out = []
    for entry in entries:
        ident, _, mark = entry.partition(" ")
        when = id_time(ident)
        assert when is not None, ident
        out.append(BackupRef(ident, when, complete=mark != "x"))
    return out


def rules_of(case: dict[str, Any]) -> RetentionRules:
    """The case's rules; ``last`` and ``within`` are off unless the case names them,
    so that the grandfather-father-son cases test that part alone."""
    rules = {"last": 0, "within_hours": 0, **case["rules"]}
    hours = rules.pop("within_hours")
    return RetentionRules(**rules, within=timedelta(hours=hours))


def _now(case: dict[str, Any]) -> datetime | None:
    return id_time(case["now"]) if "now" in case else None


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_retention_table(case: dict[str, Any]) -> None:
    backups = refs(case["backups"])
    random.Random(7).shuffle(backups)  # the order given must not matter
    decision = decide_retention(backups, rules_of(case), now=_now(case))
    assert list(decision.keep) == case["keep"]
    assert set(decision.keep) | set(decision.delete) == {b.id for b in backups}
    assert not set(decision.keep) & set(decision.delete)
    assert list(decision.delete) == sorted(decision.delete, reverse=True)


def test_the_newest_complete_backup_is_never_deleted() -> None:
    rng = random.Random(11)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(300):
        backups = [
            BackupRef(
                f"b{i}",
                start + timedelta(hours=rng.randint(0, 24 * 365)),
                complete=rng.random() > 0.3,
            )
            for i in range(rng.randint(1, 30))
        ]
        rules = RetentionRules(rng.randint(0, 5), rng.randint(0, 3), rng.randint(0, 3))
        decision = decide_retention(backups, rules)
        complete = [b for b in backups if b.complete]
        if complete:
            newest = max(complete, key=lambda b: (b.time, b.id))
            assert newest.id in decision.keep
            assert "newest" in decision.reasons[newest.id]
