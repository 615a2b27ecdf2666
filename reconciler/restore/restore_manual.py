"""``reconciler restore`` by hand: the applied commit's stack, the pass lock, the ledger.

The developer's-PC flow (``reconciler restore latest --source s3://bucket/prod``)
and a restore on the VM without a commit both come here. The desired state is
the one of the commit the reconciler last applied, so the restore writes to
the volumes and containers that run; the pass lock keeps a daemon's pass from
starting the stopped services mid-restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydantic import ValidationError

from reconciler.adapters import engine_client
from reconciler.applied import load_applied
from reconciler.backup import stop_journal
from reconciler.backup.backup_target import open_target, safety_url
from reconciler.decide.restore_planning import plan_restore
from reconciler.deploy.passes import PASS_LOCK_WAIT_S
from reconciler.errors import ReconcilerError
from reconciler.model.backup_policy import ExternalDatabase
from reconciler.model.desired import DesiredState
from reconciler.model.restore_requests import RestoreRequest
from reconciler.ports import Checkout
from reconciler.restore.restore_ledger import RestoreLedger, RestoreRecord
from reconciler.restore.restore_pass import (
    Outcome,
    manual_id,
    own_externals,
    own_target,
    run_recorded,
    safety_target,
)
from reconciler.restore.restoring import (
    RestoreOptions,
    artifact_refs,
    resolve_backup,
    waiting_backup_lock,
)
from reconciler.settings import Settings
from reconciler.state import names
from reconciler.state.files import exclusive_lock


@dataclass
class ManualRestore:
    settings: Settings
    checkout: Checkout
    desired: DesiredState
    target: str
    options: RestoreOptions
    request_id: str
    # backup.yaml's databases outside the stack, by name.
    externals: dict[str, ExternalDatabase] = field(default_factory=dict)

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
            externals=own_externals(checkout, desired, settings),
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
        """What the restore will do, said before asking: the backup (``latest`` resolved
        once, here, and kept for the run) and exactly what it replaces."""

        options = self.options
        source = options.source or self.target
        manifest = resolve_backup(
            open_target(source, self.settings.environ, state_dir=self.settings.state_dir),
            options.backup,
        )
        plan = plan_restore(
            artifacts=artifact_refs(manifest),
            desired=self.desired,
            volumes=options.volumes,
            databases=options.databases,
            paths=options.paths,
            externals=self.externals,
        )
        self.options = replace(options, backup=manifest.id)
        total = sum(a.size for a in manifest.artifacts)
        holds = "; ".join(
            f"{a.kind} {a.name} ({_mb(a.size)} MB stored, {_mb(a.raw_size)} MB unpacked)"
            for a in manifest.artifacts
        )
        lines = [
            f"Backup {manifest.id} from {source}",
            f"  taken {manifest.time} on host {manifest.host}, commit {manifest.commit or '?'}, "
            f"project {manifest.project}, {_mb(total)} MB stored",
            f"  holds: {holds}",
            f"Over project {self.desired.project} (applied commit {self.checkout.commit[:12]}), "
            "it will:",
        ]
        if plan.stop:
            lines.append(f"  stop services {', '.join(plan.stop)} (and start them again after)")
        for volume in plan.volumes:
            if volume.paths:
                lines.append(
                    f"  replace {', '.join(volume.paths)} in Docker volume {volume.volume} "
                    f"(compose volume {volume.key}) exactly, and leave the rest of it"
                )
            else:
                lines.append(
                    f"  replace Docker volume {volume.volume} (compose volume {volume.key}) exactly"
                )
        for database in plan.databases:
            if database.external is not None:
                where = f"{database.external.host}:{database.external.port}"
                lines.append(
                    f"  drop the databases {', '.join(database.external.databases)} of the "
                    f"external server {where} (database {database.service}) and load the dump"
                )
                continue
            lines.append(
                f"  drop the user databases of {database.container} (service "
                f"{database.service}) and load the dump"
            )
        lines.append(
            "  first copy the current contents to the safety copy "
            f"{safety_url(safety_target(self.settings, self.target), self.request_id)}"
        )
        return "\n".join(lines)

    def run(self) -> Outcome:
        ledger = RestoreLedger(self.settings.state_dir)
        # The backup lock first, then the pass lock: the backup pipeline's order.
        with (
            waiting_backup_lock(self.settings.state_dir),
            exclusive_lock(
                self.settings.state_dir / names.PASS_LOCK, wait_s=PASS_LOCK_WAIT_S, what="pass"
            ),
        ):
            ledger.recover()
            client = engine_client.connect()
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
                    externals=self.externals,
                )
            finally:
                client.close()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}"


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ")
