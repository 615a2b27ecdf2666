"""One typed status report: what ``reconciler status [--json]`` prints and the metrics read.

The pass's status (``state/status.py``), the deploy running now, the
services the engine runs, the last and next backup, the restore ledger and
the last drill, each read from its own state file by the part that writes
it, then validated into one model. ``status --json`` prints it; the daemon's
``/metrics`` reads the same model at every scrape (without the engine), so
the two cannot tell different stories.

A part that cannot be read does not cost the others: it is left empty and
its error is said in ``errors`` (``{"drill": "..."}``), in the JSON and on
``/metrics`` (as a section missing from the scrape, logged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler.errors import ReconcilerError
from reconciler.ports import Engine
from reconciler.settings import Settings
from reconciler.state.status import Status, StatusStore


class _Open(BaseModel):
    """A part written by another module: what it names is typed, more is kept as it is."""

    model_config = ConfigDict(extra="allow")


class Reconciling(BaseModel):
    commit: str
    step: str
    since: str
    actions: int


class ServiceRow(_Open):
    name: str | None
    container: str
    state: str
    health: str | None = None
    commit: str | None = None


class LastBackup(_Open):
    time: str | None = None
    result: str | None = None
    id: str | None = None
    size: int | None = None
    duration_s: float | None = None
    error: str | None = None
    last_success_time: str | None = None
    last_success_size: int | None = None


class BackupReport(BaseModel):
    last: LastBackup | None = None
    next: str | None = None
    schedule: str | None = None
    error: str | None = None


class RestoreRow(_Open):
    id: str | None = None
    state: str
    backup: str | None = None
    error: str | None = None
    hint: str | None = None


class DrillReport(_Open):
    result: str | None = None
    backup: str | None = None
    started: str | None = None
    finished: str | None = None
    time: str | None = None
    error: str | None = None
    counts: dict[str, int] | None = None


class StatusReport(Status):
    verify: str = "off"  # signed commits: off, ssh or gpg
    reconciling: Reconciling | None = None  # a deploy running now (Flux's Reconciling)
    services: list[ServiceRow] | None = None  # None: the engine was not asked, or did not answer
    services_error: str | None = None
    backup: BackupReport = BackupReport()
    restores: list[RestoreRow] = []
    drill: DrillReport | None = None
    errors: dict[str, str] = {}  # part -> why it could not be read

    @property
    def ledger_readable(self) -> bool:
        return not (len(self.restores) == 1 and self.restores[0].state == "unknown")


def collect(settings: Settings, *, engine: Engine | None = None) -> StatusReport:
    """The report; with ``engine`` (a ``DockerEngine``), the services it runs too."""
    from reconciler.backup.backup_jobs import backup_report
    from reconciler.deploy.progress import ProgressFile
    from reconciler.restore.restore_drill import read_drill
    from reconciler.restore.restore_ledger import status_report

    status = StatusStore(settings.state_dir).load()
    report = StatusReport.model_validate({**status.model_dump(), "verify": settings.verify})
    report.project = settings.project or status.project
    errors: dict[str, str] = {}
    progress = ProgressFile(settings.state_dir).read()
    if progress is not None:
        report.reconciling = Reconciling(**progress.to_status())
    report.backup = _part(
        errors,
        "backup",
        lambda: BackupReport.model_validate(backup_report(settings)),
        BackupReport(),
    )
    report.restores = _part(
        errors,
        "restores",
        lambda: [RestoreRow.model_validate(row) for row in status_report(settings.state_dir)],
        [],
    )
    report.drill = _part(
        errors,
        "drill",
        lambda: _drill(read_drill(settings.state_dir)),
        None,
    )
    if engine is not None:
        if report.project:
            try:
                report.services = [
                    ServiceRow.model_validate(row) for row in services_of(engine, report.project)
                ]
            except ReconcilerError as exc:
                report.services_error = str(exc)
        else:
            report.services = []
    report.errors = errors
    return report


def _drill(raw: dict[str, Any] | None) -> DrillReport | None:
    return None if raw is None else DrillReport.model_validate(raw)


_T = TypeVar("_T")


def _part(errors: dict[str, str], name: str, read: Callable[[], _T], empty: _T) -> _T:
    try:
        value = read()
    except (ValidationError, ReconcilerError, OSError, ValueError) as exc:
        errors[name] = f"{name} cannot be read: {exc}".splitlines()[0]
        return empty
    return value


def services_of(engine: Engine, project: str) -> list[dict[str, Any]]:
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
