"""Restore planning, pure: which requests are due, and what one request will write.

- ``due_requests``: the requests of restore.yaml not yet started on this VM, in
  file order. An id the ledger knows in any state but ``pending`` never runs
  again (run once: re-polls, restarts and re-applied commits change nothing).
- ``plan_restore``: from a backup's manifest (its artifacts), the request's
  optional subsets and the desired state: the volumes to replace, the dumps to
  load, and the services to stop meanwhile. Anything the request names that
  the backup lacks, or that the backup holds and this stack does not declare,
  is a ``RestorePlanError`` before anything is touched.

No Docker, no S3: the runtime turns the manifest into ``ArtifactRef`` values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from reconciler.model.backup_policy import ExternalDatabase, is_mariadb_service
from reconciler.model.desired import DesiredState, ServiceSpec
from reconciler.model.restore_requests import RestoreRequest

LedgerState = Literal["pending", "running", "succeeded", "failed", "interrupted", "skipped"]


class RestorePlanError(ValueError):
    """The request cannot be served by this backup on this stack; nothing was touched."""


@dataclass(frozen=True)
class ArtifactRef:
    """One artifact of a backup, as the manifest describes it."""

    kind: Literal["volume", "database"]
    name: str  # the compose volume key, or the database service
    key: str  # relative to the backup source
    size: int
    sha256: str
    raw_size: int | None = None  # bytes once decompressed, as the manifest declares
    snapshot: str = ""  # a restic part: its snapshot (size and raw_size are then bounds)


@dataclass(frozen=True)
class VolumeRestore:
    key: str  # compose volume key
    volume: str  # Docker volume name, e.g. ``shop_site``
    artifact: ArtifactRef
    # Only these files or folders (normalised, relative to the volume root);
    # None: the whole volume.
    paths: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatabaseRestore:
    service: str  # the part's name: a service, or an external database's name
    container: str  # e.g. ``shop-db-1``; "" for an external database (a helper reaches it)
    image: str
    artifact: ArtifactRef
    # backup.yaml's entry of a database outside the stack; None: a service's.
    external: ExternalDatabase | None = None


@dataclass(frozen=True)
class RestorePlan:
    volumes: tuple[VolumeRestore, ...]
    databases: tuple[DatabaseRestore, ...]
    # Services stopped while volumes are replaced and dumps loaded, in the
    # desired state's order: those that mount a replaced volume, and those
    # that depend on a database being loaded (they would write to it mid-load).
    stop: tuple[str, ...]

    @property
    def artifacts(self) -> tuple[ArtifactRef, ...]:
        return tuple(v.artifact for v in self.volumes) + tuple(d.artifact for d in self.databases)

    @property
    def empty(self) -> bool:
        return not self.volumes and not self.databases

    def describe(self) -> str:
        parts = [
            f"volume {v.key}" + (f" ({', '.join(v.paths)})" if v.paths else "")
            for v in self.volumes
        ]
        parts += [f"database {d.service}" for d in self.databases]
        return ", ".join(parts) or "nothing"


def due_requests(
    requests: Sequence[RestoreRequest], ledger: Mapping[str, LedgerState]
) -> list[RestoreRequest]:
    """The requests to run now, in file order: new ids, and ids still ``pending``.

    ``pending`` is what a pass writes before it starts the first of several
    requests; one that never started (the process died before reaching it) is
    still due. ``running`` (left by a dead process, see the ledger's recovery),
    ``interrupted``, ``succeeded``, ``failed`` and ``skipped`` (listed before
    this VM's first pass) are final.
    """
    return [r for r in requests if ledger.get(r.id, "pending") == "pending"]


def plan_restore(
    *,
    artifacts: Iterable[ArtifactRef],
    desired: DesiredState,
    volumes: Sequence[str] | None = None,
    databases: Sequence[str] | None = None,
    paths: Sequence[str] | None = None,
    externals: Mapping[str, ExternalDatabase] | None = None,
) -> RestorePlan:
    """What a restore of these artifacts onto ``desired`` writes; raise when it cannot.

    ``externals``: backup.yaml's databases outside the stack, by name; a dump
    of one is loaded into that server.

    ``volumes``/``databases`` are the request's subsets; None means every one
    of that kind in the backup, () none of them. ``paths`` (a partial restore)
    are files or folders of the one volume named; no database is loaded then
    unless one is named.
    """
    if paths is not None:
        if volumes is None or len(volumes) != 1:
            raise RestorePlanError(
                "paths are files or folders of one volume: name that volume alone"
            )
        if databases is None:
            databases = ()
    by_kind: dict[str, dict[str, ArtifactRef]] = {"volume": {}, "database": {}}
    for artifact in artifacts:
        by_kind[artifact.kind][artifact.name] = artifact
    problems: list[str] = []
    chosen_volumes = _choose("volume", by_kind["volume"], volumes, problems)
    chosen_databases = _choose("database", by_kind["database"], databases, problems)

    volume_plans: list[VolumeRestore] = []
    for key in chosen_volumes:
        spec = desired.volumes.get(key)
        if spec is None:
            problems.append(
                f"the backup holds volume '{key}', which {desired.compose_path} does not "
                "declare: name the volumes to restore (volumes: [...])"
            )
            continue
        volume_plans.append(
            VolumeRestore(
                key,
                spec.name,
                by_kind["volume"][key],
                paths=tuple(paths) if paths is not None else None,
            )
        )
    database_plans: list[DatabaseRestore] = []
    for name in chosen_databases:
        external = (externals or {}).get(name)
        if external is not None:
            database_plans.append(
                DatabaseRestore(
                    name, "", external.image or "", by_kind["database"][name], external=external
                )
            )
            continue
        service = desired.services.get(name)
        if service is None or not is_mariadb_service(service):
            problems.append(
                f"the backup holds a dump of database service '{name}', which is not a MariaDB "
                f"service of {desired.compose_path} nor an external database of backup.yaml: "
                "name the databases to restore (databases: [...])"
            )
            continue
        database_plans.append(
            DatabaseRestore(
                name,
                desired.container_of(name),
                service.image,
                by_kind["database"][name],
            )
        )
    if problems:
        raise RestorePlanError("; ".join(problems))
    if not volume_plans and not database_plans:
        raise RestorePlanError("nothing to restore: the request selects no volume and no database")
    return RestorePlan(
        volumes=tuple(volume_plans),
        databases=tuple(database_plans),
        stop=services_to_stop(
            desired,
            volumes={v.volume for v in volume_plans},
            databases={d.service for d in database_plans},
            users={s for d in database_plans if d.external for s in d.external.stop_services},
        ),
    )


def _choose(
    kind: str,
    available: Mapping[str, ArtifactRef],
    wanted: Sequence[str] | None,
    problems: list[str],
) -> list[str]:
    if wanted is None:
        return list(available)
    chosen = []
    for name in wanted:
        if name in available:
            chosen.append(name)
        else:
            have = ", ".join(sorted(available)) or "none"
            problems.append(f"the backup has no {kind} '{name}' (it has: {have})")
    return chosen


def services_to_stop(
    desired: DesiredState,
    *,
    volumes: set[str],
    databases: set[str],
    users: Collection[str] = (),
) -> tuple[str, ...]:
    """Services that mount a replaced volume or depend on a reloaded database.

    ``users``: the services an external database's entry says write to it.
    """
    stop: list[str] = []
    for service in desired.services.values():
        if (
            service.name in users
            or _mounts_any(service, volumes)
            or (
                service.name not in databases
                and any(dep.service in databases for dep in service.depends_on)
            )
        ):
            stop.append(service.name)
    return tuple(stop)


def _mounts_any(service: ServiceSpec, volumes: set[str]) -> bool:
    return any(m.type == "volume" and m.source in volumes for m in service.mounts)
