"""The backup schedule: daily at HH:MM in a zone, across DST, missed runs at start.

Time is frozen by giving the ``schedule`` library a ``datetime`` module whose
``now`` returns the test's clock; nothing waits on the wall clock.
"""

from __future__ import annotations

import datetime as real_datetime
import types
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schedule

from reconciler.backup.scheduling import BackupSchedule
from reconciler.model.backup_policy import Schedule


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moment = Clock(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))

    class FrozenDatetime(real_datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            if tz is None:  # naive local time, as the library expects
                return moment.now.astimezone().replace(tzinfo=None)
            return moment.now.astimezone(tz)

    module = types.ModuleType("datetime")
    module.__dict__.update(real_datetime.__dict__)
    module.datetime = FrozenDatetime  # type: ignore[attr-defined]
    monkeypatch.setattr(schedule, "datetime", module)
    return moment


def bucharest(at: str = "05:04") -> Schedule:
    return Schedule(at=at, timezone="Europe/Bucharest")


def step_until_run(plan: BackupSchedule, clock: Clock, runs: list[datetime]) -> datetime:
    """Advance the clock to the next run and run it; return when it ran (UTC)."""
    upcoming = plan.next_run()
    assert upcoming is not None
    clock.now = upcoming
    before = len(runs)
    assert plan.run_pending()
    assert len(runs) == before + 1
    return upcoming


def test_daily_at_local_time_across_both_dst_changes(clock: Clock) -> None:
    runs: list[datetime] = []
    plan = BackupSchedule(
        bucharest(),
        job=lambda: runs.append(clock.now),
        last_success=lambda: clock.now - timedelta(hours=1),
        clock=clock,
    )
    # Spring: on 29 March 2026 Bucharest moves from UTC+2 to UTC+3.
    spring = [step_until_run(plan, clock, runs) for _ in range(3)]
    assert spring == [
        datetime(2026, 3, 28, 3, 4, tzinfo=UTC),  # 05:04 EET
        datetime(2026, 3, 29, 2, 4, tzinfo=UTC),  # 05:04 EEST
        datetime(2026, 3, 30, 2, 4, tzinfo=UTC),
    ]
    # Autumn: on 25 October 2026 it moves back to UTC+2.
    clock.now = datetime(2026, 10, 23, 12, 0, tzinfo=UTC)
    plan.update(None)
    plan.update(bucharest())
    autumn = [step_until_run(plan, clock, runs) for _ in range(3)]
    assert autumn == [
        datetime(2026, 10, 24, 2, 4, tzinfo=UTC),
        datetime(2026, 10, 25, 3, 4, tzinfo=UTC),
        datetime(2026, 10, 26, 3, 4, tzinfo=UTC),
    ]


def test_nothing_runs_before_the_time(clock: Clock) -> None:
    runs: list[datetime] = []
    plan = BackupSchedule(
        Schedule(at="05:04", timezone="UTC"),
        job=lambda: runs.append(clock.now),
        last_success=lambda: clock.now,
        clock=clock,
    )
    assert plan.next_run() == datetime(2026, 3, 28, 5, 4, tzinfo=UTC)
    clock.now = datetime(2026, 3, 28, 5, 3, 59, tzinfo=UTC)
    assert not plan.due()
    assert not plan.run_pending()
    assert runs == []


@pytest.mark.parametrize(
    ("last_success_age", "runs_at_start"),
    [(None, True), (timedelta(days=1, minutes=1), True), (timedelta(hours=23), False)],
)
def test_a_missed_backup_runs_at_start(
    clock: Clock, last_success_age: timedelta | None, runs_at_start: bool
) -> None:
    runs: list[datetime] = []
    plan = BackupSchedule(
        bucharest(),
        job=lambda: runs.append(clock.now),
        last_success=lambda: None if last_success_age is None else clock.now - last_success_age,
        clock=clock,
    )
    assert plan.due() is runs_at_start
    assert plan.run_pending() is runs_at_start
    assert len(runs) == int(runs_at_start)
    # Only at start: the next call waits for the time of day.
    assert not plan.run_pending()


def test_a_failing_job_does_not_stop_the_schedule(clock: Clock) -> None:
    calls: list[datetime] = []

    def failing() -> None:
        calls.append(clock.now)
        raise RuntimeError("S3 down")

    plan = BackupSchedule(
        Schedule(at="05:04", timezone="UTC"),
        job=failing,
        last_success=lambda: clock.now,
        clock=clock,
    )
    first = plan.next_run()
    assert first is not None
    clock.now = first
    assert plan.run_pending()
    assert plan.next_run() == first + timedelta(days=1)
    assert len(calls) == 1


def test_off_when_the_policy_goes(clock: Clock) -> None:
    plan = BackupSchedule(bucharest(), job=lambda: None, last_success=lambda: None, clock=clock)
    plan.update(None)
    assert plan.next_run() is None
    assert not plan.run_pending()
