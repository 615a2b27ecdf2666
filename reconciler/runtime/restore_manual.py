"""``reconciler restore`` by hand: the applied commit's stack, the pass lock, the ledger.

The developer's-PC flow (``reconciler restore latest --source s3://bucket/prod``)
and a restore on the VM without a commit both come here. The desired state is
the one of the commit the reconciler last applied, so the restore writes to
the volumes and containers that run; the pass lock keeps a daemon's pass from
starting the stopped services mid-restore.
"""

from __future__ import annotations

from dataclasses import dataclass

import docker
from pydantic import ValidationError

from reconciler.errors import ReconcilerError
from reconciler.model.desired import DesiredState
from reconciler.model.restore_requests import RestoreRequest
from reconciler.ports import Checkout
from reconciler.runtime import stop_journal
from reconciler.runtime.passes import PASS_LOCK_WAIT_S
from reconciler.runtime.restore_ledger import RestoreLedger, RestoreRecord
from reconciler.runtime.restore_pass import (
    Outcome,
    manual_id,
    own_target,
    run_recorded,
    safety_target,
)
from reconciler.runtime.restoring import RestoreOptions, safety_url, waiting_backup_lock
from reconciler.settings import Settings
from reconciler.statefiles import exclusive_lock


@dataclass
class ManualRestore:
    settings: Settings
    checkout: Checkout
    desired: DesiredState
    target: str
    options: RestoreOptions
    request_id: str

    @classmethod
    def prepare(
        cls,
        settings: Settings,
        *,
        backup: str,
        source: str | None,
        volumes: tuple[str, ...] | None,
        databases: tuple[str, ...] | None,
        request_id: str | None,
        paths: tuple[str, ...] | None = None,
    ) -> ManualRestore:
        from reconciler.runtime.wiring import load_applied

        applied = load_applied(settings)
        if applied is None:
            raise ReconcilerError(
                "nothing is deployed yet: run `reconciler sync` first, so the stack (its "
                "volumes and database containers) exists to restore into"
            )
        checkout, desired = applied
        ident = request_id or manual_id()
        try:
            # The same checks as a request in restore.yaml: id, backup, source.
            request = RestoreRequest(id=ident, backup=backup, source=source, paths=paths)
        except ValidationError as exc:
            problems = "; ".join(_clean(e["msg"]) for e in exc.errors())
            raise ReconcilerError(f"reconciler restore: {problems}") from exc
        if RestoreLedger(settings.state_dir).load().get(ident) is not None:
            raise ReconcilerError(f"the ledger already has a restore '{ident}': pick another --id")
        return cls(
            settings=settings,
            checkout=checkout,
            desired=desired,
            target=own_target(checkout, desired, settings),
            options=RestoreOptions(
                backup=backup,
                source=source,
                volumes=volumes,
                databases=databases,
                paths=request.paths,
            ),
            request_id=ident,
        )

    def describe(self) -> str:
        options = self.options
        what = []
        if options.paths:
            what.append(f"in volume {', '.join(options.volumes or ())}: {', '.join(options.paths)}")
        else:
            what.append(
                "volumes " + ", ".join(options.volumes)
                if options.volumes is not None
                else "every volume in the backup"
            )
        what.append(
            "databases " + ", ".join(options.databases or ("none",))
            if options.databases is not None or options.paths
            else "every database in the backup"
        )
        return (
            f"Restore {options.backup} from {options.source or self.target} over project "
            f"{self.desired.project} (commit {self.checkout.commit[:12]}): {'; '.join(what)} "
            "are replaced. The current contents go to "
            f"{safety_url(safety_target(self.settings, self.target), self.request_id)} "
            "first."
        )

    def run(self) -> Outcome:
        ledger = RestoreLedger(self.settings.state_dir)
        # The backup lock first, then the pass lock: the backup pipeline's order.
        with (
            waiting_backup_lock(self.settings.state_dir),
            exclusive_lock(
                self.settings.state_dir / "pass.lock", wait_s=PASS_LOCK_WAIT_S, what="pass"
            ),
        ):
            ledger.recover()
            client = docker.from_env()
            try:
                stop_journal.finish_interrupted_stops(client, self.settings.state_dir)
                return run_recorded(
                    RestoreRecord(
                        id=self.request_id,
                        state="pending",
                        origin="cli",
                        commit=self.checkout.commit,
                        requested=self.options.backup,
                        source=self.options.source,
                        volumes=list(self.options.volumes)
                        if self.options.volumes is not None
                        else None,
                        databases=list(self.options.databases)
                        if self.options.databases is not None
                        else None,
                        paths=list(self.options.paths) if self.options.paths else None,
                    ),
                    self.options,
                    ledger=ledger,
                    client=client,
                    desired=self.desired,
                    settings=self.settings,
                    target=self.target,
                    commit=self.checkout.commit,
                )
            finally:
                client.close()


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ")
