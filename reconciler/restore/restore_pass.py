"""Restore requests in the pass, and by hand: the ledger around the restore engine.

``run_due`` runs the due requests that ``restore_hook.py`` found, in file
order, recording every step in the ledger as it happens. A request that fails
is recorded ``failed`` and makes this sync fail (``AfterApplyFailed``); the
next passes find nothing due and succeed, while status keeps showing the
failure. ``recover_interrupted`` undoes what a killed restore left behind.

``restore_by_hand`` is ``reconciler restore``: the same engine and ledger
under the pass lock, for the applied commit's desired state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler import notifying
from reconciler.adapters import stack_control
from reconciler.adapters.engine_client import ENGINE_ERRORS, REPORTED_ERRORS, Client
from reconciler.backup.commit_policy import backup_policy
from reconciler.errors import (
    AfterApplyFailed,
    BackupBusy,
    InvalidDesiredState,
    ReconcilerError,
    RestoreFailed,
)
from reconciler.logs import event
from reconciler.model.backup_policy import ExternalDatabase
from reconciler.model.desired import DesiredState
from reconciler.model.restore_requests import RestoreRequest
from reconciler.ports import Checkout
from reconciler.restore.restore_ledger import (
    RestoreLedger,
    RestoreRecord,
    now,
    pending_record,
)
from reconciler.restore.restoring import (
    RestoreContext,
    RestoreOptions,
    RestoreReport,
    run_restore,
    waiting_backup_lock,
)
from reconciler.restore.volume_staging import STAGE_PURPOSE
from reconciler.settings import Settings

ClientFactory = Callable[[], Client]


def own_target(checkout: Checkout, desired: DesiredState, settings: Settings) -> str:
    """This environment's backup target: backup.yaml's, else the default file target.

    It is the default source of a request and where safety copies go.
    """
    try:
        policy = backup_policy(checkout, desired, settings)
    except InvalidDesiredState as exc:
        raise ReconcilerError(
            f"backup.yaml is invalid, so the backup target is unknown:\n{exc}"
        ) from exc
    return policy.target if policy is not None else settings.default_backup_target


def own_externals(
    checkout: Checkout, desired: DesiredState, settings: Settings
) -> dict[str, ExternalDatabase]:
    """backup.yaml's databases outside the stack, by name: a restore loads their dumps there."""
    try:
        policy = backup_policy(checkout, desired, settings)
    except InvalidDesiredState as exc:
        raise ReconcilerError(
            f"backup.yaml is invalid, so its external databases are unknown:\n{exc}"
        ) from exc
    return {e.name: e for e in policy.external_databases} if policy is not None else {}


SAFETY_COPY_DIR = "RECONCILER_SAFETY_COPY_DIR"


def safety_target(settings: Settings, target: str) -> str:
    """Where safety copies go: ``RECONCILER_SAFETY_COPY_DIR`` (a local folder) when set,
    else this environment's backup target (under ``pre-restore/<id>/``).

    A local folder is faster (no upload) but lives and dies with this host's
    disk; the target keeps the copy off the machine.
    """
    folder = settings.environ.get(SAFETY_COPY_DIR, "").strip()
    if folder:
        return f"file://{Path(folder).resolve()}"
    return target


@dataclass(frozen=True)
class Outcome:
    record: RestoreRecord
    report: RestoreReport | None

    @property
    def ok(self) -> bool:
        return self.record.state == "succeeded"

    def summary(self) -> str:
        record = self.record
        if self.report is not None:
            return (
                f"restore {record.id}: backup {self.report.backup} from {self.report.source} "
                f"({self.report.plan.describe()}); safety copy {self.report.safety_copy} "
                f"(backup {self.report.safety_copy_backup})"
            )
        return f"restore {record.id} failed: {record.error}"


def run_recorded(
    record: RestoreRecord,
    options: RestoreOptions,
    *,
    ledger: RestoreLedger,
    client: Client,
    desired: DesiredState,
    settings: Settings,
    target: str,
    commit: str | None,
    externals: Mapping[str, ExternalDatabase] | None = None,
) -> Outcome:
    """Queue (if new), start, run and finish one request, the ledger written at each step."""
    ledger.queue([record])
    ledger.start(record.id)
    event("restore.start", id=record.id, backup=options.backup, source=options.source or target)

    def write(**fields: object) -> None:
        ledger.update(record.id, **fields)

    context = RestoreContext(
        client=client,
        desired=desired,
        state_dir=settings.state_dir,
        default_source=target,
        safety_target=safety_target(settings, target),
        commit=commit,
        spool_dir=settings.spool_base,
        record=write,
        environ=settings.environ,
        externals=dict(externals or {}),
    )
    try:
        report = run_restore(record.id, options, context)
    except RestoreFailed as exc:
        final = ledger.update(record.id, state="failed", finished=now(), error=str(exc))
        return _told(settings, Outcome(final, None), commit=commit)
    except Exception as exc:  # a bug must still leave a final state, never "running"
        event("restore.crashed", level=logging.ERROR, id=record.id, error=repr(exc))
        final = ledger.update(
            record.id, state="failed", finished=now(), error=f"internal error: {exc!r}"
        )
        return _told(settings, Outcome(final, None), commit=commit)
    final = ledger.update(record.id, state="succeeded", finished=now(), error=None)
    return _told(settings, Outcome(final, report), commit=commit)


def _told(settings: Settings, outcome: Outcome, *, commit: str | None) -> Outcome:
    """Send a restore's result to the notification channels (never raises)."""
    notifying.restore_finished(
        settings,
        ident=outcome.record.id,
        ok=outcome.ok,
        summary=outcome.summary(),
        commit=commit,
        details={"state": outcome.record.state},
    )
    return outcome


def run_due(
    due: Sequence[RestoreRequest],
    *,
    checkout: Checkout,
    desired: DesiredState,
    settings: Settings,
    ledger: RestoreLedger,
    make_client: ClientFactory,
) -> list[str]:
    """Run each due request in order, under the backup lock; ``AfterApplyFailed`` on failure."""
    try:
        target = own_target(checkout, desired, settings)
        externals = own_externals(checkout, desired, settings)
        ledger.queue([pending_record(r, commit=checkout.commit) for r in due])
        client = make_client()
    except REPORTED_ERRORS as exc:
        # Nothing ran: the requests stay pending and are tried by the next pass.
        raise AfterApplyFailed(f"restore requests could not start: {exc}") from exc
    changes: list[str] = []
    failures: list[str] = []
    try:
        for request in due:
            with ExitStack() as held:
                try:
                    # No waiting: a backup that stops services waits for the
                    # pass lock this pass holds. The request stays pending.
                    held.enter_context(waiting_backup_lock(settings.state_dir, wait_s=0))
                except BackupBusy:
                    failures.append(
                        f"restore {request.id} waits: a backup is running; it stays "
                        "pending and runs in a later pass"
                    )
                    break
                outcome = run_recorded(
                    pending_record(request, commit=checkout.commit),
                    RestoreOptions(
                        backup=request.backup,
                        source=request.source,
                        volumes=request.volumes,
                        databases=request.databases,
                        paths=request.paths,
                    ),
                    ledger=ledger,
                    client=client,
                    desired=desired,
                    settings=settings,
                    target=target,
                    commit=checkout.commit,
                    externals=externals,
                )
            (changes if outcome.ok else failures).append(outcome.summary())
    finally:
        client.close()
    if failures:
        raise AfterApplyFailed("\n".join(failures), done=changes)
    return changes


def recover_interrupted(
    settings: Settings,
    desired: DesiredState,
    make_client: ClientFactory,
    records: list[RestoreRecord],
    interrupted: list[str],
) -> None:
    """Undo what a killed restore left running or stopped (found by tests/faults).

    - Services it was stopping: the engine finishes a stop even after the
      process that asked died, so the apply of this pass may have seen the
      container still running. Stop (which waits out a stop in flight) and start
      each one the restore did not start again itself.
    - Its helper containers, and those of its safety copy: removed. The pass
      lock is held; the backup lock is taken without waiting, so no helper in
      use is removed (when a backup runs, the next restore or backup removes them).

    Failures are logged; the next restore or backup and the next pass retry.
    """
    stopping: set[str] = set()
    for record in records:
        if record.id in interrupted:
            stopping |= left_stopped(record.done)
    try:
        client = make_client()
    except ENGINE_ERRORS as exc:
        event("restore.recover", level=logging.WARNING, error=str(exc))
        return
    try:
        for name in sorted(stopping & set(desired.services)):
            grace = desired.services[name].stop_grace_period_s
            container = desired.container_of(name)
            stack_control.stop_service(client, desired.project, container, grace_s=grace)
            stack_control.start_service(client, desired.project, container)
            event("restore.recover", service=name, action="started")
        with waiting_backup_lock(settings.state_dir, wait_s=0):
            stack_control.remove_leftovers(
                client,
                project=desired.project,
                # A staging volume holds a whole volume's copy: not left for the next restore.
                purposes={"restore", "restore-empty", STAGE_PURPOSE, "backup"},
            )
    except REPORTED_ERRORS as exc:  # BackupBusy is one of ours
        event("restore.recover", level=logging.WARNING, error=str(exc))
    finally:
        client.close()


def left_stopped(done: list[str]) -> set[str]:
    """Services a restore's steps leave stopped, in order: a put-back stops some again."""
    stopping: set[str] = set()
    for text in done:
        if text.startswith("stopping "):
            stopping.add(text.removeprefix("stopping "))
        elif text.startswith("started "):
            stopping.discard(text.removeprefix("started "))
    return stopping


def manual_id(at: datetime | None = None) -> str:
    """The ledger id of a restore run by hand: ``manual-2026-11-28T10-00-00Z``."""
    return "manual-" + (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H-%M-%SZ")
