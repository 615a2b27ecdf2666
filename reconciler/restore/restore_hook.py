"""The pass's after-apply step for restore.yaml: which requests are due, then run them.

``restore_hook(settings)``: once a commit is applied, it reads restore.yaml,
marks what a dead process left ``running`` as ``interrupted`` (and undoes
what it left stopped), and hands each due request, in file order, to
``restore_pass.run_due``. A malformed restore.yaml runs no request and fails
the sync with its ``file:line`` issues, but the rest of the commit was applied.

The restore engine (restic, S3, the helper containers) is imported only when
a request is due or a restore was interrupted: a pass with nothing to restore,
which is nearly every pass, does not pay for loading it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from reconciler.adapters import engine_client
from reconciler.adapters.engine_client import Client
from reconciler.backup.commit_policy import backup_policy
from reconciler.decide.restore_planning import due_requests
from reconciler.deploy.passes import AfterApply
from reconciler.errors import AfterApplyFailed, InvalidDesiredState, LedgerUnreadable
from reconciler.logs import event
from reconciler.model.desired import DesiredState
from reconciler.model.restore_requests import FILE_NAME, RestoreRequest, load_restore_requests
from reconciler.ports import Checkout
from reconciler.restore.restore_ledger import RestoreLedger, pending_record
from reconciler.settings import Settings
from reconciler.state.status import Status

ClientFactory = Callable[[], Client]


def load_requests(
    checkout: Checkout, desired: DesiredState, settings: Settings
) -> tuple[RestoreRequest, ...]:
    """The commit's restore requests; ``InvalidDesiredState`` with file:line issues."""
    try:
        policy = backup_policy(checkout, desired, settings)
    except InvalidDesiredState:
        policy = None  # reported as backup.yaml's own issues, which stall the commit
    return load_restore_requests(
        checkout.root,
        directory=settings.directory,
        desired=desired,
        environ=settings.environ,
        external_databases=[e.name for e in policy.external_databases] if policy else (),
    )


def restore_hook(settings: Settings, *, client_factory: ClientFactory | None = None) -> AfterApply:
    """The after-apply step that runs the commit's due restore requests."""
    make_client = client_factory or engine_client.connect

    def run_restore_requests(
        checkout: Checkout, desired: DesiredState, status: Status
    ) -> list[str]:
        try:
            requests = load_requests(checkout, desired, settings)
        except InvalidDesiredState as exc:
            for issue in exc.issues:
                event(
                    "restore.invalid", level=logging.ERROR, commit=checkout.commit, error=str(issue)
                )
            raise AfterApplyFailed(
                f"{settings.directory}/{FILE_NAME} is invalid, so no restore request ran "
                f"(the rest of the commit was applied):\n{exc}"
            ) from exc
        ledger = RestoreLedger(settings.state_dir)
        if not ledger.initialised():
            if any(entry.result == "succeeded" for entry in status.history):
                # Passes succeeded here before, so the ledger existed: it was
                # lost, and guessing would re-run requests. Refuse.
                raise AfterApplyFailed(
                    f"the restore ledger {ledger.path} is missing although this VM has run "
                    "passes before; no restore request runs until it is put back (or an empty "
                    "one is written, which marks nothing as done)"
                )
            adopted = ledger.adopt([pending_record(r, commit=checkout.commit) for r in requests])
            for ident in adopted:
                event("restore.skipped", level=logging.WARNING, id=ident, commit=checkout.commit)
            return [
                f"restore {ident}: skipped (listed before this VM's first pass)"
                for ident in adopted
            ]
        try:
            interrupted = ledger.recover()
            due = due_requests(requests, ledger.load().states()) if requests else []
        except LedgerUnreadable as exc:
            raise AfterApplyFailed(str(exc)) from exc
        if interrupted or due:
            from reconciler.restore import restore_pass  # the engine: see the docstring

            if interrupted:
                restore_pass.recover_interrupted(
                    settings, desired, make_client, ledger.load().restores, interrupted
                )
            if due:
                return restore_pass.run_due(
                    due,
                    checkout=checkout,
                    desired=desired,
                    settings=settings,
                    ledger=ledger,
                    make_client=make_client,
                )
        return []

    return run_restore_requests
