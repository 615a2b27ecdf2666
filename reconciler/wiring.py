"""Builds the real pass from settings: the git source, the Docker engine, the hooks.

The only place that knows which adapter implements which seam; everything
else takes them as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from reconciler.adapters.docker_engine import DockerEngine
from reconciler.adapters.swarm_engine import DockerSwarm
from reconciler.applied import make_source
from reconciler.daemon.loop import Daemon, Job
from reconciler.deploy.passes import AfterApply, PassListener, Reconciler, Recovery, Validator
from reconciler.deploy.verifying import CommitVerifier
from reconciler.errors import Unavailable
from reconciler.model.desired import DesiredState
from reconciler.model.engine_mode import EngineMode, SwarmRole
from reconciler.ports import Checkout
from reconciler.settings import Settings


def pass_hooks(settings: Settings) -> tuple[list[Validator], list[AfterApply]]:
    """The pass's steps of the backup and restore features (light: no restic, no S3)."""
    # Backups: backup.yaml is part of a commit's validation (a bad one stalls
    # the commit like a bad compose.yaml). Restores: due restore.yaml requests
    # run after each converged apply (last, after any other step).
    from reconciler.backup.commit_policy import backup_validator
    from reconciler.restore.restore_hook import restore_hook

    return [backup_validator(settings)], [restore_hook(settings)]


def daemon_jobs(settings: Settings) -> list[Job]:
    """The daemon's scheduled jobs: the backup and the restore drill."""
    from reconciler.backup.backup_jobs import backup_job
    from reconciler.restore.restore_drill import drill_job

    return [backup_job(settings), drill_job(settings)]


def make_reconciler(
    settings: Settings,
    *,
    engine: DockerEngine | None = None,
    listeners: list[PassListener] | None = None,
) -> Reconciler:
    validators, after_apply = pass_hooks(settings)
    # Notifications: failed passes to the webhooks, the commit's state to the forge.
    from reconciler.notifying import Notifier, pass_listener, pending_hook

    notifier = Notifier.from_settings(settings)
    source = make_source(settings)
    policy = settings.signature_policy
    return Reconciler(
        settings,
        source=source,
        engine=engine or DockerSwarm(),
        validators=validators,
        after_apply=after_apply,
        # Extra listeners (the daemon's metrics) hear passes after the notifier.
        listeners=[pass_listener(settings, notifier=notifier), *(listeners or [])],
        before_apply=[pending_hook(settings, notifier=notifier)],
        verifier=CommitVerifier(source, policy) if policy else None,
        recoveries=[backup_stop_recovery(settings)],
    )


def backup_stop_recovery(settings: Settings) -> Recovery:
    """Start again what a killed backup stopped (backup/stop_journal.py)."""

    def recover() -> list[str]:
        from reconciler.backup import stop_journal

        if not (settings.state_dir / stop_journal.JOURNAL).exists():
            return []  # the usual case: no Docker client made for nothing
        from reconciler.adapters import engine_client

        client = engine_client.connect()
        try:
            return stop_journal.finish_interrupted_stops(client, settings.state_dir)
        finally:
            client.close()

    return recover


def make_daemon(settings: Settings) -> Daemon:
    # Metrics: state read at scrape time, pass timings heard from the pass;
    # /healthz and /metrics served beside the loop (docs/metrics.md).
    # With RECONCILER_WEBHOOK_SECRET, the same server takes signed pushes
    # (POST /hooks/push) and wakes the loop for a pass (docs/webhooks.md).
    from reconciler.daemon.control import ControlSocket, SyncReply
    from reconciler.daemon.endpoints import Endpoints
    from reconciler.daemon.metrics import HttpMetrics, make_registry

    registry, pass_metrics = make_registry(settings)
    reconciler = make_reconciler(settings, listeners=[pass_metrics])

    def sync_for_a_command() -> SyncReply:
        outcome = reconciler.sync()
        return SyncReply(
            result=outcome.result,
            reason=outcome.reason,
            message=outcome.message,
            commit=outcome.commit,
            changes=list(outcome.changes),
        )

    daemon = Daemon(reconciler, jobs=daemon_jobs(settings))
    daemon.background += [
        Endpoints(settings, registry, trigger=daemon.request_pass, metrics=HttpMetrics(registry)),
        ControlSocket(settings, sync_for_a_command),
    ]
    return daemon


class SwarmProbe(Protocol):
    """What ``validate_engine_mode`` asks of an engine (``DockerEngine`` has it)."""

    def swarm_role(self) -> SwarmRole: ...

    def close(self) -> None: ...


def validate_engine_mode(settings: Settings, engine: SwarmProbe | None = None) -> EngineMode:
    """The engine a folder is validated for: RECONCILER_ENGINE, or with ``auto`` the
    engine's own answer when it can be asked, else one engine (validate runs on
    a developer's machine too, where no engine may be reachable)."""
    if settings.engine != "auto":
        return settings.engine
    engine = engine or DockerEngine()
    try:
        return "swarm" if engine.swarm_role() == "manager" else "engine"
    except Unavailable:
        return "engine"
    finally:
        engine.close()


def validate_folder(
    folder: Path, settings: Settings, *, engine_mode: EngineMode | None = None
) -> DesiredState:
    """Validate a desired-state folder on disk (``reconciler validate DIR``).

    Paths in messages are relative to the folder's parent, the repository root
    in the usual layout (``desired-state/compose.yaml:12: ...``). ``engine_mode``
    (``--engine``) wins over ``validate_engine_mode``.
    """
    mode = engine_mode or validate_engine_mode(settings)
    folder = folder.resolve()
    checkout = Checkout(commit="working-tree", root=folder.parent)
    reconciler = Reconciler(
        settings.model_copy(update={"directory": folder.name}),
        source=make_source(settings),
        engine=DockerEngine(),
        validators=pass_hooks(settings)[0],
    )
    desired = reconciler.load(checkout, engine_mode=mode)
    # restore.yaml is checked here, not by a pass validator: in a pass a broken
    # restore.yaml must not stop the rest of the commit (see restore_hook).
    from reconciler.restore.restore_hook import load_requests

    load_requests(checkout, desired, settings.model_copy(update={"directory": folder.name}))
    return desired
