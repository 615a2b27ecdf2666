"""Builds the real pass from settings: the git source, the Docker engine, the hooks.

The only place that knows which adapter implements which seam; everything
else takes them as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.adapters.docker_engine import DockerEngine
from reconciler.applied import make_source
from reconciler.errors import ReconcilerError
from reconciler.model.desired import DesiredState
from reconciler.ports import Checkout
from reconciler.runtime.daemon import Daemon, Job
from reconciler.runtime.passes import AfterApply, PassListener, Reconciler, Recovery, Validator
from reconciler.runtime.verifying import CommitVerifier
from reconciler.settings import Settings
from reconciler.status import StatusStore


def feature_hooks(settings: Settings) -> tuple[list[Validator], list[AfterApply], list[Job]]:
    """Validators, after-apply steps and daemon jobs of the backup and restore features."""
    validators: list[Validator] = []
    after_apply: list[AfterApply] = []
    jobs: list[Job] = []
    # Backups: backup.yaml is part of a commit's validation (a bad one stalls
    # the commit like a bad compose.yaml); the schedule is a daemon job.
    from reconciler.backup.backup_jobs import backup_job, backup_validator

    validators.append(backup_validator(settings))
    jobs.append(backup_job(settings))
    # Restores: due restore.yaml requests run after each converged apply (last,
    # after any other step); the drill is a daemon job on its own schedule.
    from reconciler.restore.restore_drill import drill_job
    from reconciler.restore.restore_pass import restore_hook

    after_apply.append(restore_hook(settings))
    jobs.append(drill_job(settings))
    return validators, after_apply, jobs


def make_reconciler(
    settings: Settings,
    *,
    engine: DockerEngine | None = None,
    listeners: list[PassListener] | None = None,
) -> Reconciler:
    validators, after_apply, _jobs = feature_hooks(settings)
    # Notifications: failed passes to the webhooks, the commit's state to the forge.
    from reconciler.runtime.notifying import Notifier, pass_listener, pending_hook

    notifier = Notifier.from_settings(settings)
    source = make_source(settings)
    policy = settings.signature_policy
    return Reconciler(
        settings,
        source=source,
        engine=engine or DockerEngine(),
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
    _validators, _after_apply, jobs = feature_hooks(settings)
    # Metrics: state read at scrape time, pass timings heard from the pass;
    # /healthz and /metrics served beside the loop (docs/metrics.md).
    # With RECONCILER_WEBHOOK_SECRET, the same server takes signed pushes
    # (POST /hooks/push) and wakes the loop for a pass (docs/webhooks.md).
    from reconciler.runtime.endpoints import Endpoints
    from reconciler.runtime.metrics import HttpMetrics, make_registry

    registry, pass_metrics = make_registry(settings)
    daemon = Daemon(make_reconciler(settings, listeners=[pass_metrics]), jobs=jobs)
    daemon.background.append(
        Endpoints(settings, registry, trigger=daemon.request_pass, metrics=HttpMetrics(registry))
    )
    return daemon


def validate_folder(folder: Path, settings: Settings) -> DesiredState:
    """Validate a desired-state folder on disk (``reconciler validate DIR``).

    Paths in messages are relative to the folder's parent, the repository root
    in the usual layout (``desired-state/compose.yaml:12: ...``).
    """
    folder = folder.resolve()
    checkout = Checkout(commit="working-tree", root=folder.parent)
    reconciler = Reconciler(
        settings.model_copy(update={"directory": folder.name}),
        source=make_source(settings),
        engine=DockerEngine(),
        validators=feature_hooks(settings)[0],
    )
    desired = reconciler.load(checkout)
    # restore.yaml is checked here, not by a pass validator: in a pass a broken
    # restore.yaml must not stop the rest of the commit (see restore_pass).
    from reconciler.restore.restore_pass import load_requests

    load_requests(checkout, desired, settings.model_copy(update={"directory": folder.name}))
    return desired


def collect_status(settings: Settings) -> dict[str, Any]:
    """The stored status plus what runs now (when Docker answers) and feature reports."""
    status = StatusStore(settings.state_dir).load()
    report: dict[str, Any] = status.model_dump(mode="json")
    report["verify"] = settings.verify  # signed commits: off, ssh or gpg
    project = settings.project or status.project
    report["project"] = project
    if project:
        try:
            report["services"] = services_of(DockerEngine(), project)
        except ReconcilerError as exc:
            report["services"] = None
            report["services_error"] = str(exc)
    else:
        report["services"] = []
    from reconciler.backup.backup_jobs import backup_report
    from reconciler.restore.restore_drill import read_drill
    from reconciler.restore.restore_ledger import status_report

    report["backup"] = backup_report(settings)

    report["restores"] = status_report(settings.state_dir)
    report["drill"] = read_drill(settings.state_dir)
    return report


def services_of(engine: DockerEngine, project: str) -> list[dict[str, Any]]:
    from reconciler import labels

    observed = engine.observe(project)
    services = []
    for container in sorted(observed.containers, key=lambda c: c.name):
        if container.project != project or container.is_helper:
            continue
        services.append(
            {
                "name": container.service,
                "container": container.name,
                "state": container.state,
                "health": container.health,
                "commit": container.labels.get(labels.COMMIT),
                "config_hash": (container.config_hash or "")[:12],
                "image": container.image,
            }
        )
    return services
