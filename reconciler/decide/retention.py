"""Which backups to keep: grandfather-father-son retention, as a pure function.

Rules (restic's ``--keep-daily/weekly/monthly``, each applied on its own and
the results joined):

- ``daily: N`` keeps the newest complete backup of each of the N most recent
  UTC days that have one; ``weekly`` the same per ISO week, ``monthly`` per
  calendar month. Days without backups do not use up a slot.
- The newest complete backup is always kept, whatever the numbers say; so
  are the ``last`` (3) newest complete backups, and every complete backup
  younger than ``within`` (a day) at ``now``: a second backup on the same day
  never deletes the first, the one a user took before a risky change
  (restic's ``--keep-last`` and ``--keep-within``).
- An incomplete backup (no manifest) older than the newest complete one is a
  failed or interrupted run: it is deleted. One newer than the newest complete
  backup may be a run in progress: it is kept.

The caller's rule, not checked here: prune only after a backup succeeded, never
after one failed (a failing run must not thin out the good backups it could
not replace).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class BackupRef:
    id: str
    time: datetime  # aware, UTC
    complete: bool


@dataclass(frozen=True)
class RetentionRules:
    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    last: int = 3
    within: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class RetentionDecision:
    keep: tuple[str, ...]  # newest first
    delete: tuple[str, ...]  # newest first
    # Why each kept backup stays: "newest", "last", "within", "daily", "weekly",
    # "monthly", "in progress".
    reasons: dict[str, tuple[str, ...]]


def decide_retention(
    backups: Sequence[BackupRef], rules: RetentionRules, *, now: datetime | None = None
) -> RetentionDecision:
    """Split ``backups`` into those to keep and those to delete.

    ``now`` (aware) is when the prune runs; without it the ``within`` rule
    counts from the newest complete backup.
    """
    ordered = sorted(backups, key=lambda b: (b.time, b.id), reverse=True)
    complete = [b for b in ordered if b.complete]
    reasons: dict[str, list[str]] = {}

    def keep(backup: BackupRef, reason: str) -> None:
        reasons.setdefault(backup.id, []).append(reason)

    if complete:
        keep(complete[0], "newest")
        for backup in complete[: rules.last]:
            keep(backup, "last")
        since = (now or complete[0].time) - rules.within
        for backup in complete:
            if backup.time > since:
                keep(backup, "within")
    newest_complete_time = complete[0].time if complete else None
    for backup in ordered:
        if not backup.complete and (
            newest_complete_time is None or backup.time > newest_complete_time
        ):
            keep(backup, "in progress")

    buckets: list[tuple[str, int, Callable[[datetime], Hashable]]] = [
        ("daily", rules.daily, lambda t: t.date()),
        ("weekly", rules.weekly, lambda t: t.isocalendar()[:2]),
        ("monthly", rules.monthly, lambda t: (t.year, t.month)),
    ]
    for name, count, period_of in buckets:
        seen: set[Hashable] = set()
        for backup in complete:  # newest first: the first of a period is its newest
            if len(seen) >= count:
                break
            period = period_of(backup.time)
            if period in seen:
                continue
            seen.add(period)
            keep(backup, name)

    kept = tuple(b.id for b in ordered if b.id in reasons)
    deleted = tuple(b.id for b in ordered if b.id not in reasons)
    return RetentionDecision(
        keep=kept, delete=deleted, reasons={k: tuple(v) for k, v in reasons.items()}
    )
