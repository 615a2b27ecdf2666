"""Backups wired to the rest of the reconciler: the context, the daemon job, the status report.

- ``load_context(settings)``: the applied commit's desired state and backup
  policy (what ``reconciler backup ...`` and the daemon back up);
- ``backup_validator(settings)``: the pass's check of backup.yaml;
- ``backup_job(settings)``: the daemon's job, called between passes; it
  follows the applied commit's backup.yaml and runs the schedule;
- ``backup_report(settings)``: the last backup and the next one, for
  ``reconciler status``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import notifying
from reconciler.adapters import engine_client
from reconciler.adapters.engine_client import Client
from reconciler.applied import load_applied
from reconciler.backup import backup_status
from reconciler.backup.backing_up import BackupResult, run_backup
from reconciler.backup.backup_target import BackupTarget, open_target
from reconciler.backup.backup_writing import HELPER_IMAGE_VARIABLE
from reconciler.backup.commit_policy import backup_policy
from reconciler.backup.manifests import ProgressCallback
from reconciler.backup.scheduling import BackupSchedule
from reconciler.errors import BackupBusy, InvalidDesiredState, ReconcilerError
from reconciler.logs import event
from reconciler.model.backup_policy import BackupPolicy, Schedule
from reconciler.model.desired import DesiredState
from reconciler.redaction import redact_url
from reconciler.settings import Settings
from reconciler.state import names
from reconciler.state.files import replace_file
from reconciler.state.status import StatusStore

SCHEDULE_FILE = names.BACKUP_SCHEDULE


@dataclass
class BackupContext:
    """What a backup needs to know, from the applied commit and the settings."""

    settings: Settings
    desired: DesiredState
    policy: BackupPolicy | None  # None: the commit has no backup.yaml
    commit: str | None
    client_factory: Callable[[], Client] = field(default=engine_client.connect)
    helper_image: str | None = None

    def target(self, override: str | None = None) -> str:
        if override:
            return override
        if self.policy is not None:
            return self.policy.target
        return self.settings.default_backup_target

    def backup_target(self, override: str | None = None) -> BackupTarget:
        return open_target(
            self.target(override), self.settings.environ, state_dir=self.settings.state_dir
        )


def load_context(settings: Settings) -> BackupContext:
    """The applied commit's stack and backup policy (needs a ``reconciler sync`` first)."""

    applied = load_applied(settings)
    if applied is None:
        raise ReconcilerError(
            "nothing is deployed yet: run `reconciler sync` first (a backup reads the "
            "applied commit's backup.yaml and the volumes and databases it names)"
        )
    checkout, desired = applied
    return BackupContext(
        settings=settings,
        desired=desired,
        policy=backup_policy(checkout, desired, settings),
        commit=checkout.commit,
        helper_image=settings.environ.get(HELPER_IMAGE_VARIABLE) or None,
    )


def backup_now(
    context: BackupContext,
    *,
    target: str | None = None,
    progress: ProgressCallback | None = None,
) -> BackupResult:
    """One backup of the context's policy to its target (or ``target``), then retention."""
    if context.policy is None:
        raise ReconcilerError(
            f"the applied commit ({(context.commit or '?')[:12]}) has no "
            f"{context.settings.directory}/backup.yaml: nothing to back up"
        )
    policy = context.policy
    if target:
        policy = policy.model_copy(update={"target": target})
    settings = context.settings
    notifying.backup_started(settings)
    try:
        client = context.client_factory()
        try:
            result = run_backup(
                client=client,
                target=open_target(policy.target, settings.environ, state_dir=settings.state_dir),
                desired=context.desired,
                policy=policy,
                state_dir=settings.state_dir,
                commit=context.commit,
                helper_image=context.helper_image or engine_client.own_image(client),
                progress=progress,
            )
        finally:
            client.close()
    except BackupBusy:
        raise  # not this backup's failure: the one running reports its own result
    except Exception as exc:
        notifying.backup_finished(
            settings,
            ok=False,
            message=f"backup to {redact_url(policy.target)} failed: {exc}",
            commit=context.commit,
            details={"target": redact_url(policy.target)},
        )
        raise
    manifest = result.manifest
    notifying.backup_finished(
        settings,
        ok=True,
        message=(
            f"backup {manifest.id} to {redact_url(policy.target)}: "
            f"{manifest.size} bytes in {manifest.duration_s} s"
        ),
        commit=context.commit,
        details={"id": manifest.id, "size": manifest.size, "duration_s": manifest.duration_s},
    )
    return result


def backup_job(
    settings: Settings,
    *,
    loader: Callable[[Settings], BackupContext] = load_context,
    run: Callable[[BackupContext], object] = backup_now,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Callable[[], None]:
    """The daemon's job: call it between passes (every tick is fine: it is cheap).

    It re-reads the applied commit from the status store; when that changes it
    loads the commit's backup.yaml and follows its schedule. A backup missed
    while the daemon was down runs on the first call.
    """

    state: dict[str, Any] = {"commit": None, "context": None}
    notifier = notifying.Notifier.from_settings(settings)

    def run_scheduled() -> None:
        context = state["context"]
        if context is not None:
            run(context)

    schedule = BackupSchedule(
        None,
        job=run_scheduled,
        last_success=lambda: backup_status.last_success(settings.state_dir),
        clock=clock,
    )

    def backups() -> None:
        commit = StatusStore(settings.state_dir).load().applied_commit
        if commit is None:
            return
        if commit != state["commit"]:
            state["commit"] = commit
            try:
                context = loader(settings)
            except (InvalidDesiredState, ReconcilerError) as exc:
                # The pass reports an invalid commit; keep the last good schedule.
                event("backup.schedule_skipped", level=logging.WARNING, error=str(exc))
                return
            state["context"] = context
            when = context.policy.schedule if context.policy else None
            schedule.update(when)
            write_schedule(settings.state_dir, when, schedule.next_run())
        schedule.run_pending()
        if state["context"] is not None:
            write_schedule(settings.state_dir, schedule.when, schedule.next_run())
        if schedule.when is None:
            state["watching_since"] = None
            return
        # A missed backup: the schedule is on and no backup succeeded for a day.
        state["watching_since"] = state.get("watching_since") or clock()
        notifying.check_missed_backup(
            settings,
            last_success=backup_status.last_success(settings.state_dir),
            watching_since=state["watching_since"],
            now=clock(),
            notifier=notifier,
        )

    return backups


def write_schedule(state_dir: Path, when: Schedule | None, upcoming: datetime | None) -> None:
    """Keep the next run where ``reconciler status`` (another process) can read it."""
    data = {
        "at": when.at if when else None,
        "timezone": when.timezone if when else None,
        "next_run": upcoming.isoformat() if upcoming else None,
    }
    path = state_dir / SCHEDULE_FILE
    try:
        if path.exists() and json.loads(path.read_text()) == data:
            return  # unchanged: no write every tick
    except (OSError, ValueError):
        pass
    replace_file(path, json.dumps(data).encode())


def backup_report(
    settings: Settings, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> dict[str, Any]:
    """The last backup (time, result, size, duration, error) and the next one scheduled.

    ``error`` is set when the last backup failed, or when the last good one is
    more than a day old while a schedule is on (a missed backup).
    """
    last = backup_status.read_status(settings.state_dir)
    schedule: dict[str, Any] = {}
    try:
        schedule = json.loads((settings.state_dir / SCHEDULE_FILE).read_text())
    except (OSError, ValueError):
        schedule = {}
    report: dict[str, Any] = {
        "last": last.to_dict() if last else None,
        "next": schedule.get("next_run"),
        "schedule": (
            f"daily at {schedule['at']} {schedule['timezone']}" if schedule.get("at") else None
        ),
        "error": None,
    }
    if last is not None and last.result == "failed":
        report["error"] = f"the last backup failed: {last.error}"
    elif schedule.get("at"):
        good = backup_status.last_success(settings.state_dir)
        if good is None or (now() - good).total_seconds() > 26 * 3600:
            # A day plus slack for the time the backup itself takes.
            report["error"] = (
                "no good backup in the last day" if good else "no backup has succeeded yet"
            )
    return report
