"""When the daemon backs up: daily at HH:MM in a named time zone, with the ``schedule`` library.

``BackupSchedule`` wraps one ``schedule.Scheduler`` (never the library's global
one) holding one daily job. The library computes each next run in the named
zone, so 05:04 stays 05:04 on the wall clock across daylight-saving changes.
When the daemon starts and the last good backup is older than a day (or there
is none), the first ``run_pending`` runs one at once: a VM that was down at
05:04 does not wait a day more.

The daemon loop (not this module) calls ``run_pending()`` between passes and
``update()`` when a new commit changes backup.yaml; ``next_run()`` feeds
``reconciler status``. A failing backup is logged and recorded by the backup
itself; the schedule moves on to the next day and never stops the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import schedule

from reconciler.logs import event
from reconciler.model.backup_policy import Schedule

MISSED_AFTER = timedelta(days=1)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BackupSchedule:
    """A daily backup job; ``job`` runs the backup (it may raise: that is logged here)."""

    def __init__(
        self,
        when: Schedule | None,
        *,
        job: Callable[[], object],
        last_success: Callable[[], datetime | None],
        clock: Clock = _utcnow,
    ) -> None:
        self._job = job
        self._last_success = last_success
        self._clock = clock
        self._scheduler = schedule.Scheduler()
        self._when: Schedule | None = None
        self._checked_missed = False
        self.update(when)

    @property
    def when(self) -> Schedule | None:
        return self._when

    def update(self, when: Schedule | None) -> None:
        """Follow a new schedule (None: backups are off, e.g. backup.yaml was removed)."""
        if when == self._when:
            return
        self._scheduler.clear()
        self._when = when
        if when is not None:
            # ``every: day`` is the only period backup.yaml accepts for now.
            self._scheduler.every().day.at(when.at, when.timezone).do(self._run)
            event("backup.scheduled", at=when.at, timezone=when.timezone, next=self._next_iso())

    def missed(self) -> bool:
        """No good backup in the last day (or ever)."""
        last = self._last_success()
        return last is None or self._clock() - last > MISSED_AFTER

    def due(self) -> bool:
        """Whether ``run_pending`` would run the backup now."""
        if self._when is None:
            return False
        if not self._checked_missed and self.missed():
            return True
        return any(job.should_run for job in self._scheduler.jobs)

    def run_pending(self) -> bool:
        """Run the backup when due (or missed at start); return whether it ran."""
        if self._when is None:
            return False
        if not self._checked_missed:
            self._checked_missed = True
            if self.missed():
                event("backup.missed", last_success=_iso(self._last_success()))
                self._run()
                return True
        ran = self.due()
        self._scheduler.run_pending()
        return ran

    def next_run(self) -> datetime | None:
        """The next scheduled backup, as an aware UTC time (None when off)."""
        if self._when is None or not self._scheduler.jobs:
            return None
        upcoming = self._scheduler.get_next_run()
        # The library keeps naive local times; astimezone() reads them as local.
        return upcoming.astimezone(UTC) if upcoming is not None else None

    def _next_iso(self) -> str | None:
        return _iso(self.next_run())

    def _run(self) -> None:
        try:
            self._job()
        except Exception as exc:  # the loop must go on; the backup logged and recorded why
            event(
                "backup.schedule_failed", level=logging.ERROR, error=str(exc), next=self._next_iso()
            )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
