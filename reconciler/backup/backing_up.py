"""The backup pipeline: volumes and database dumps, streamed to the target, manifest last.

Each artifact flows source -> zstd -> SHA-256 and size -> object store, in
chunks: nothing of the backup's size touches local disk and memory stays
bounded. A backup is the folder ``<id>/`` in the target (id from the UTC start
time, ``2026-11-27T05-04-00Z``); its ``manifest.json`` is written only after
every artifact is stored, so a backup without one is incomplete: never listed
as good, never restored, deleted by the next prune.

Also here: ``list_backups``, ``verify_backup`` (download, check every SHA-256,
read every archive to its end) and ``prune`` (retention). Two backups never run
at once: ``backup_lock`` holds an fcntl lock on a file in the state dir.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
import socket
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal, cast

import zstandard

from reconciler.adapters import (
    database_helper,
    engine_client,
    mariadb,
    restic,
    restic_helper,
    stack_control,
)
from reconciler.adapters.engine_client import Client
from reconciler.adapters.object_store import ObjectStore
from reconciler.backup import backup_status, restic_backups, stop_journal
from reconciler.backup.backup_target import BackupTarget
from reconciler.concurrency import both
from reconciler.decide.retention import (
    BackupRef,
    RetentionDecision,
    RetentionRules,
    decide_retention,
)
from reconciler.errors import (
    BackupBusy,
    BackupError,
    ObjectNotFound,
    ReconcilerError,
    ResticBackupError,
    ResticError,
    StoreError,
    VerifyError,
)
from reconciler.logs import event
from reconciler.model.backup_policy import BackupPolicy
from reconciler.model.desired import DesiredState, ServiceSpec
from reconciler.state import names
from reconciler.state.files import PRIVATE_FILE_MODE, exclusive_lock, private_dir

FORMAT_VERSION = 1  # zstd artifacts and manifest.json in <id>/: read, never written
RESTIC_FORMAT = 2  # snapshots in the target's restic repository (backup/restic_backups.py)
MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 1024 * 1024  # ours are a few KB: a bigger one is not ours
LOCK_FILE = names.BACKUP_LOCK
PASS_LOCK = names.PASS_LOCK
PASS_LOCK_WAIT_S = 600.0
PROGRESS_EVENT_S = 30.0
# An image with restic for the helpers that read volumes; default: the reconciler's own.
HELPER_IMAGE_VARIABLE = "RECONCILER_HELPER_IMAGE"
_ID = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z$")
_ID_FORMAT = "%Y-%m-%dT%H-%M-%SZ"


@dataclass(frozen=True)
class Artifact:
    kind: Literal["volume", "database"]
    name: str  # the compose volume key, or the database service
    key: str  # relative to the target
    size: int  # bytes stored (compressed)
    sha256: str  # of the bytes stored
    raw_size: int  # bytes before compression
    compression: str = "zstd"
    format: str = "tar"  # "tar" for volumes, "sql" for databases
    # Format 2 (restic): the snapshot that holds the part, and how many files it read.
    # ``key`` is then only a name (``<id>/volumes/<name>``), ``sha256`` empty:
    # restic authenticates every blob it reads back.
    snapshot: str = ""
    files: int = 0


@dataclass(frozen=True)
class Manifest:
    id: str
    time: str  # ISO 8601 UTC, the start of the backup
    commit: str | None
    host: str
    project: str
    artifacts: tuple[Artifact, ...]
    duration_s: float
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        data = asdict(self)
        if self.format_version == RESTIC_FORMAT:
            data["artifacts"] = [
                {f: getattr(a, f) for f in _RESTIC_ARTIFACT_FIELDS} for a in self.artifacts
            ]
        else:
            data["artifacts"] = [
                {f: getattr(a, f) for f in _ARTIFACT_FIELDS} for a in self.artifacts
            ]
        return (json.dumps(data, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """A manifest read from a store, every field checked (``ValueError`` names the bad one).

        Whoever can write to the store can write this file, so nothing in it is
        trusted: its id and names go into object keys and local paths (the
        spool, the drill's scratch objects), its sizes bound what is read.
        """
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = data.get("format_version")
        if version not in (FORMAT_VERSION, RESTIC_FORMAT) or isinstance(version, bool):
            raise ValueError(
                f"manifest format {str(version)[:20]} is not understood by this reconciler "
                f"(it reads formats {FORMAT_VERSION} and {RESTIC_FORMAT}): upgrade the reconciler"
            )
        unknown = set(data) - _MANIFEST_FIELDS
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        ident = _checked(data, "id", str, _ID)
        _checked(data, "time", str)
        try:
            datetime.fromisoformat(data["time"])
        except ValueError:
            raise ValueError(f"time: {data['time']!r} is not an ISO 8601 time") from None
        if data.get("commit") is not None:
            _checked(data, "commit", str, _COMMIT)
        _checked(data, "host", str, _HOST)
        _checked(data, "project", str, _NAME)
        if not isinstance(data.get("duration_s"), int | float) or data["duration_s"] < 0:
            raise ValueError("duration_s: not a number of seconds")
        items = data.get("artifacts")
        if not isinstance(items, list):
            raise ValueError("artifacts: not a list")
        parse = _artifact if version == FORMAT_VERSION else _restic_artifact
        artifacts = tuple(parse(ident, i, item) for i, item in enumerate(items))
        seen: set[tuple[str, str]] = set()
        for artifact in artifacts:
            if (artifact.kind, artifact.name) in seen:
                raise ValueError(f"artifacts: {artifact.kind} {artifact.name} is listed twice")
            seen.add((artifact.kind, artifact.name))
        return cls(
            id=ident,
            time=data["time"],
            commit=data.get("commit"),
            host=data["host"],
            project=data["project"],
            artifacts=artifacts,
            duration_s=float(data["duration_s"]),
            format_version=version,
        )

    @property
    def size(self) -> int:
        return sum(a.size for a in self.artifacts)


_MANIFEST_FIELDS = frozenset(
    {"id", "time", "commit", "host", "project", "artifacts", "duration_s", "format_version"}
)
_ARTIFACT_FIELDS = ("kind", "name", "key", "size", "sha256", "raw_size", "compression", "format")
_RESTIC_ARTIFACT_FIELDS = ("kind", "name", "snapshot", "size", "raw_size", "files")
# Compose volume keys and service names as the model accepts them; never "." or "..".
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_COMMIT = re.compile(r"^[0-9a-f]{4,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SNAPSHOT = _SHA256  # restic's full snapshot ids are SHA-256 too
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
# What each kind of artifact is, where the pipeline writes it, and nothing else.
_ARTIFACT_LAYOUT = {
    "volume": ("volumes", "tar.zst", "tar"),
    "database": ("databases", "sql.zst", "sql"),
}


def _checked(
    data: dict[str, Any], name: str, kind: type, pattern: re.Pattern[str] | None = None
) -> Any:
    value: Any = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name}: missing or not a {kind.__name__}")
    if pattern is not None and not pattern.fullmatch(str(value)):
        raise ValueError(f"{name}: {str(value)[:80]!r} is not an allowed value")
    return value


def _common_fields(
    item: Any, where: str, allowed: tuple[str, ...], numbers: tuple[str, ...]
) -> tuple[str, str, str, str, str]:
    """What both formats' artifacts share, checked: kind, layout, name, counts.

    Returns ``(kind, folder, suffix, format, name)``; ``ValueError`` says which field.
    """
    if not isinstance(item, dict):
        raise ValueError(f"{where}: not an object")
    unknown = set(item) - set(allowed)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    try:
        kind = _checked(item, "kind", str)
        if kind not in _ARTIFACT_LAYOUT:
            raise ValueError(f"kind: {kind[:40]!r} is neither volume nor database")
        folder, suffix, fmt = _ARTIFACT_LAYOUT[kind]
        name = _checked(item, "name", str, _NAME)
        for number in numbers:
            if _checked(item, number, int) < 0:
                raise ValueError(f"{number}: negative")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return kind, folder, suffix, fmt, name


def _artifact(ident: str, index: int, item: Any) -> Artifact:
    where = f"artifacts[{index}]"
    kind, folder, suffix, fmt, name = _common_fields(
        item, where, _ARTIFACT_FIELDS, ("size", "raw_size")
    )
    try:
        key = _checked(item, "key", str)
        if key != f"{ident}/{folder}/{name}.{suffix}":
            raise ValueError(f"key: {key[:120]!r} is not {ident}/{folder}/{name}.{suffix}")
        _checked(item, "sha256", str, _SHA256)
        if item.get("compression", "zstd") != "zstd":
            raise ValueError("compression: only zstd is read")
        if item.get("format", fmt) != fmt:
            raise ValueError(f"format: a {kind} artifact is {fmt}")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Artifact(
        kind=kind,  # type: ignore[arg-type]  # one of _ARTIFACT_LAYOUT's keys
        name=name,
        key=key,
        size=item["size"],
        sha256=item["sha256"],
        raw_size=item["raw_size"],
        compression="zstd",
        format=fmt,
    )


def _restic_artifact(ident: str, index: int, item: Any) -> Artifact:
    where = f"artifacts[{index}]"
    kind, folder, _suffix, fmt, name = _common_fields(
        item, where, _RESTIC_ARTIFACT_FIELDS, ("size", "raw_size", "files")
    )
    try:
        snapshot = _checked(item, "snapshot", str, _SNAPSHOT)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Artifact(
        kind=kind,  # type: ignore[arg-type]  # one of _ARTIFACT_LAYOUT's keys
        name=name,
        key=f"{ident}/{folder}/{name}",
        size=item["size"],
        sha256="",
        raw_size=item["raw_size"],
        compression="restic",
        format=fmt,
        snapshot=snapshot,
        files=item["files"],
    )


@dataclass(frozen=True)
class BackupSummary:
    id: str
    time: datetime
    state: Literal["complete", "incomplete"]
    size: int  # bytes stored under the backup's folder
    objects: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "state": self.state,
            "size": self.size,
            "objects": self.objects,
        }


@dataclass(frozen=True)
class Progress:
    """One step of progress: ``bytes_in`` read from the source, ``bytes_out`` stored."""

    phase: Literal["backup", "verify"]
    artifact: str  # "volume site", "database db"
    bytes_in: int
    bytes_out: int
    done: bool = False


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class BackupResult:
    manifest: Manifest
    pruned: tuple[str, ...] = ()


def backup_id(at: datetime) -> str:
    return at.astimezone(UTC).strftime(_ID_FORMAT)


def id_time(backup: str) -> datetime | None:
    """The UTC time a backup id names, or None when it is not a backup id."""
    if not _ID.fullmatch(backup):
        return None
    return datetime.strptime(backup, _ID_FORMAT).replace(tzinfo=UTC)


@contextmanager
def backup_lock(state_dir: Path) -> Iterator[None]:
    """Hold the backup lock, or raise ``BackupBusy`` at once when another process has it.

    An fcntl lock dies with its process: a crashed backup never leaves a stale lock.
    """
    private_dir(state_dir)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise BackupBusy(
                f"another backup is running (pid {holder}, lock {path}); wait for it to finish"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def run_backup(
    *,
    client: Client,
    target: BackupTarget,
    desired: DesiredState,
    policy: BackupPolicy,
    state_dir: Path,
    commit: str | None = None,
    helper_image: str | None = None,
    progress: ProgressCallback | None = None,
    prune_after: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """One backup now: lock, stream every artifact, write the manifest, prune, record status.

    Raises ``BackupBusy`` when another backup runs, ``BackupError`` (or a
    ``StoreError``/``Unavailable``) when this one fails; the failure is
    recorded in the status file and logged before it is raised. Retention
    runs only after a successful backup.
    """
    with backup_lock(state_dir):
        started = clock()
        ident = backup_id(started)
        monotonic = time.monotonic()
        try:
            started = _free_start(target, clock, first=started)
            ident = backup_id(started)
            event("backup.start", id=ident, target=target.url, project=desired.project)
            # A backup killed mid-volume leaves its helper container; the lock is
            # held, so every "backup" helper of the project is such a leftover.
            stack_control.remove_leftovers(client, project=desired.project, purposes={"backup"})
            manifest = _backup(
                client=client,
                target=target,
                desired=desired,
                policy=policy,
                ident=ident,
                started=started,
                state_dir=state_dir,
                commit=commit,
                helper_image=helper_image,
                progress=progress,
                monotonic=monotonic,
            )
        except BaseException as exc:
            duration = time.monotonic() - monotonic
            message = str(exc) or type(exc).__name__
            backup_status.record(
                state_dir,
                backup_status.BackupStatus(
                    time=started.isoformat(),
                    result="failed",
                    id=ident,
                    target=target.url,
                    duration_s=round(duration, 3),
                    error=message,
                ),
            )
            event("backup.failed", level=logging.ERROR, id=ident, target=target.url, error=message)
            if isinstance(exc, ReconcilerError):
                raise
            if isinstance(exc, Exception):
                raise BackupError(f"backup {ident} failed: {message}") from exc
            raise
        backup_status.record(
            state_dir,
            backup_status.BackupStatus(
                time=started.isoformat(),
                result="ok",
                id=ident,
                target=target.url,
                size=manifest.size,
                duration_s=manifest.duration_s,
            ),
        )
        event(
            "backup.done",
            id=ident,
            target=target.url,
            size=manifest.size,
            artifacts=len(manifest.artifacts),
            duration_s=manifest.duration_s,
        )
        pruned: tuple[str, ...] = ()
        if prune_after:
            try:
                pruned = prune(target, _rules(policy), dry_run=False).delete
            except (StoreError, ReconcilerError) as exc:
                # The backup itself is good; a prune that fails is retried after the next one.
                event(
                    "backup.prune_failed", level=logging.WARNING, target=target.url, error=str(exc)
                )
        return BackupResult(manifest=manifest, pruned=pruned)


def _free_start(
    target: BackupTarget, clock: Callable[[], datetime], *, first: datetime
) -> datetime:
    """A start time whose id names nothing in the store yet.

    Ids have a resolution of one second: a backup right after another (a
    scheduled one just after a manual one), or after one killed in the same
    second, waits for the next second rather than failing. The backup lock is
    held, so no other backup of this state folder takes the id meanwhile.
    """
    started = first
    for attempt in range(5):
        if attempt:
            target.listing = None  # listed again after the wait
        taken = {b.id for b in restic_backups.stored_backups(target, id_time)}
        if backup_id(started) not in taken and not target.store.list(f"{backup_id(started)}/"):
            return started
        time.sleep(1.0 - started.microsecond / 1_000_000 + 0.01)
        started = clock()
    raise BackupError(
        f"a backup {backup_id(started)} already exists in {target.url} and the clock "
        "does not move on; check the machine's clock"
    )


def _rules(policy: BackupPolicy) -> RetentionRules:
    return RetentionRules(
        daily=policy.retention.daily,
        weekly=policy.retention.weekly,
        monthly=policy.retention.monthly,
    )


@dataclass(frozen=True)
class VolumeToRead:
    """A volume a backup reads: its compose key (the part's name) and the engine's name.

    ``hold`` is entered around the read: a backup stops the services that
    write the volume there; a restore's safety copy has stopped them already.
    """

    key: str
    volume: str
    hold: Callable[[], AbstractContextManager[object]] = nullcontext


@dataclass(frozen=True)
class DatabaseToDump:
    service: str  # the part's name: a service, or an external database's name
    container: str  # "" for an external database: its helper is made for the dump
    external: database_helper.ExternalTarget | None = None


def external_dumps(
    client: Client, desired: DesiredState, policy: BackupPolicy
) -> list[DatabaseToDump]:
    """backup.yaml's external databases, each to be dumped through a helper of its own."""
    if not policy.external_databases:
        return []
    network = engine_client.own_network_mode(client)
    return [
        DatabaseToDump(
            entry.name,
            "",
            external=database_helper.external_target(entry, desired, own_network_mode=network),
        )
        for entry in policy.external_databases
    ]


def _backup(
    *,
    client: Client,
    target: BackupTarget,
    desired: DesiredState,
    policy: BackupPolicy,
    ident: str,
    started: datetime,
    state_dir: Path,
    commit: str | None,
    helper_image: str | None,
    progress: ProgressCallback | None,
    monotonic: float,
) -> Manifest:
    # Swarm mode: a volume whose service runs on another node is not read here,
    # where an old volume of the same name would pass for its data.
    elsewhere = stack_control.volumes_elsewhere(client, desired, [v.name for v in policy.volumes])
    if elsewhere:
        raise BackupError("; ".join(elsewhere) + " (nothing was stopped or read)")
    volumes = [
        VolumeToRead(
            key=volume.name,
            volume=desired.volumes[volume.name].name,
            hold=partial(
                _services_held_stopped,
                client,
                desired,
                desired.volumes[volume.name].name,
                state_dir,
            )
            if volume.stop_services
            else nullcontext,
        )
        for volume in policy.volumes
    ]
    databases = [
        DatabaseToDump(d.service, desired.container_of(d.service)) for d in policy.databases
    ] + external_dumps(client, desired, policy)
    held = {
        s.name
        for v in policy.volumes
        if v.stop_services
        for s in _services_mounting(desired, desired.volumes[v.name].name)
    }
    return write_backup(
        client=client,
        target=target,
        project=desired.project,
        ident=ident,
        started=started,
        commit=commit,
        helper_image=helper_image,
        volumes=volumes,
        databases=databases,
        progress=progress,
        monotonic=monotonic,
        # A database whose service a volume's hold stops is dumped after the volumes.
        side_by_side=not held & {d.service for d in databases},
    )


@contextmanager
def _services_held_stopped(
    client: Client, desired: DesiredState, volume: str, state_dir: Path
) -> Iterator[None]:
    """The services that mount ``volume`` stopped, with the pass lock held meanwhile."""
    # Held while services are down: a pass (the daemon's, when this is
    # `backup run`) would start them again in the middle of the read.
    with exclusive_lock(state_dir / PASS_LOCK, wait_s=PASS_LOCK_WAIT_S, what="pass"):
        # The lock's last holder may be a backup killed while it held
        # services stopped: bring them back before deciding what runs.
        stop_journal.finish_interrupted_stops(client, state_dir)
        journal = stop_journal.StopJournal(state_dir)
        with stack_control.services_stopped(
            client,
            project=desired.project,
            services=[
                (s.name, desired.container_of(s.name), s.stop_grace_period_s)
                for s in _services_mounting(desired, volume)
            ],
            before_stop=journal.about_to_stop,
            # Kept when a start failed: the next holder of the pass lock tries again.
            on_all_started=journal.clear,
        ):
            yield


# One part written: its kind, its name, what restic said of it.
_Part = tuple[Literal["volume", "database"], str, restic_backups.PartWritten]


def write_backup(
    *,
    client: Client,
    target: BackupTarget,
    project: str,
    ident: str,
    started: datetime,
    commit: str | None,
    helper_image: str | None,
    volumes: Sequence[VolumeToRead],
    databases: Sequence[DatabaseToDump],
    progress: ProgressCallback | None = None,
    monotonic: float | None = None,
    side_by_side: bool = True,
) -> Manifest:
    """Write one backup of ``volumes`` and ``databases`` to ``target``: its parts, then its
    manifest, whose presence is what makes it complete. A backup and a restore's
    safety copy are both made here.

    ``side_by_side``: the volumes are read on one thread while the dumps are
    taken on another (restic in the helper and the database server each use a
    core of their own); the caller says False when a volume's ``hold`` stops
    a database that is dumped.
    """
    monotonic = time.monotonic() if monotonic is None else monotonic
    # restic's host: the project, so that a volume's previous snapshot is found
    # as its parent whatever the reconciler's container is called.
    host = project
    # restic would make a missing bucket; a mistyped name must fail instead.
    target.store.list("config")
    restic_backups.ensure_repository(target, id_time)
    if volumes:
        # Asked of the engine once per backup, not once per volume.
        image = restic_helper_image(client, helper_image, volumes[0].key)
        network = engine_client.own_network_mode(client)

    def read_volumes() -> list[_Part]:
        done: list[_Part] = []
        for volume in volumes:
            runner = restic_helper.HelperRunner(
                client,
                image=image,
                project=project,
                volumes=[volume.volume],
                mount_names={volume.volume: volume.key},
                binds=[target.local_path] if target.local_path else [],
                network_mode=network,
                purpose="backup",
            )
            with volume.hold():
                part = restic_backups.volume_part(
                    target,
                    runner=runner,
                    name=volume.key,
                    ident=ident,
                    time=started,
                    host=host,
                    on_progress=_restic_progress(progress, f"volume {volume.key}"),
                )
            done.append(("volume", volume.key, part))
        return done

    def dump_databases() -> list[_Part]:
        done: list[_Part] = []
        for database in databases:
            with ExitStack() as helper:
                container = database.container
                remote: mariadb.RemoteServer | None = None
                if database.external is not None:
                    remote = database.external.remote
                    container = helper.enter_context(
                        database_helper.helper(
                            client, project=project, target=database.external, purpose="backup"
                        )
                    )
                chunks = helper.enter_context(
                    mariadb.dump_database(
                        client, container=container, project=project, remote=remote
                    )
                )
                part = restic_backups.database_part(
                    target,
                    chunks=chunks,
                    name=database.service,
                    ident=ident,
                    time=started,
                    host=host,
                    trailer=mariadb.TRAILER,
                    on_progress=_restic_progress(progress, f"database {database.service}"),
                )
            done.append(("database", database.service, part))
        return done

    if side_by_side and volumes and databases:
        volume_parts, database_parts = both(read_volumes, dump_databases, name="backup")
        parts = volume_parts + database_parts
    else:
        parts = read_volumes() + dump_databases()
    full = restic_backups.full_ids(target, ident, [part for _kind, _name, part in parts])
    artifacts = [
        _part_artifact(ident, kind, name, part, progress)
        for (kind, name, _short), part in zip(parts, full, strict=True)
    ]
    manifest = Manifest(
        id=ident,
        time=started.isoformat(),
        commit=commit,
        host=socket.gethostname(),
        project=project,
        artifacts=tuple(artifacts),
        duration_s=round(time.monotonic() - monotonic, 3),
        format_version=RESTIC_FORMAT,
    )
    # Last, and only now: its presence is what makes the backup complete. A
    # failure before leaves snapshots without one, which the next prune forgets.
    restic_backups.manifest_part(
        target,
        manifest_json=manifest.to_json(),
        ident=ident,
        size=manifest.size,
        time=started,
        host=host,
    )
    return manifest


def _part_artifact(
    ident: str,
    kind: Literal["volume", "database"],
    name: str,
    part: restic_backups.PartWritten,
    progress: ProgressCallback | None,
) -> Artifact:
    folder = _ARTIFACT_LAYOUT[kind][0]
    if progress is not None:
        progress(Progress("backup", f"{kind} {name}", part.raw_size, part.size, done=True))
    event("backup.artifact", kind=kind, artifact=name, size=part.size, raw_size=part.raw_size)
    return Artifact(
        kind=kind,
        name=name,
        key=f"{ident}/{folder}/{name}",
        size=part.size,
        sha256="",
        raw_size=part.raw_size,
        compression="restic",
        format="tar" if kind == "volume" else "sql",
        snapshot=part.snapshot,
        files=part.files,
    )


def _restic_progress(
    progress: ProgressCallback | None, label: str
) -> Callable[[restic.BackupProgress], None]:
    last_event = [time.monotonic()]

    def report(status: restic.BackupProgress) -> None:
        if progress is not None:
            progress(Progress("backup", label, status.bytes_done, status.bytes_done))
        elif time.monotonic() - last_event[0] >= PROGRESS_EVENT_S:
            # No terminal: a log line now and then shows a long backup is alive.
            last_event[0] = time.monotonic()
            event("backup.progress", artifact=label, read=status.bytes_done)

    return report


def restic_helper_image(client: Client, configured: str | None, volume: str) -> str:
    """An image with restic, present on the engine: the configured one, else our own."""
    image = configured or engine_client.own_image(client)
    if not image:
        raise BackupError(
            f"volume {volume}: no image with restic to read it with: run the reconciler from "
            "its image (install.sh), or set RECONCILER_HELPER_IMAGE to an image that has restic"
        )
    return image


def _services_mounting(desired: DesiredState, volume_name: str) -> list[ServiceSpec]:
    return [
        service
        for service in desired.services.values()
        if any(m.type == "volume" and m.source == volume_name for m in service.mounts)
    ]


def list_backups(target: BackupTarget) -> list[BackupSummary]:
    """Every backup of the target, both formats, newest first.

    A restic-format backup is complete once its manifest snapshot is in; an
    old one once its folder has ``manifest.json``.
    """
    found = {s.id: s for s in _legacy_backups(target.store)}
    for stored in restic_backups.stored_backups(target, id_time):
        found[stored.id] = BackupSummary(
            id=stored.id,
            time=stored.time,
            state="complete" if stored.complete else "incomplete",
            size=stored.size,
            objects=len(stored.snapshots),
        )
    return sorted(found.values(), key=lambda s: s.id, reverse=True)


def _legacy_backups(store: ObjectStore) -> list[BackupSummary]:
    """Every format-1 backup folder in the store; complete ones have a manifest."""
    folders: dict[str, list[int]] = {}
    complete: set[str] = set()
    for item in store.list(""):
        folder, _, rest = item.key.partition("/")
        if not rest or id_time(folder) is None:
            continue  # not ours: other files may share the prefix
        folders.setdefault(folder, []).append(item.size)
        if rest == MANIFEST:
            complete.add(folder)
    summaries = []
    for folder, sizes in folders.items():
        when = id_time(folder)
        assert when is not None
        summaries.append(
            BackupSummary(
                id=folder,
                time=when,
                state="complete" if folder in complete else "incomplete",
                size=sum(sizes),
                objects=len(sizes),
            )
        )
    return sorted(summaries, key=lambda s: s.id, reverse=True)


def read_manifest(target: BackupTarget, ident: str) -> Manifest:
    """The checked manifest of backup ``ident``; ``VerifyError`` naming the target and object."""
    store = target.store
    if not _ID.fullmatch(ident):
        # Checked before it names a key: it may come from a command line or a listing.
        raise VerifyError(
            f"{ident[:120]!r} is not a backup id like 2026-11-27T05-04-00Z; nothing is read "
            f"from {store.url}"
        )
    stored = {b.id: b for b in restic_backups.stored_backups(target, id_time)}.get(ident)
    if stored is not None:
        if not stored.complete:
            raise VerifyError(f"backup {ident} has no manifest: it is incomplete")
        try:
            raw = restic_backups.read_manifest_bytes(target, stored, MANIFEST_MAX_BYTES)
        except ResticBackupError as exc:
            raise VerifyError(f"backup {ident} in {store.url}: {exc}") from exc
        except ResticError as exc:
            raise VerifyError(
                f"backup {ident} in {store.url}: its manifest does not read back: {exc}"
            ) from exc
        manifest = _checked_manifest(store, ident, raw)
        if manifest.format_version != RESTIC_FORMAT:
            raise VerifyError(
                f"backup {ident} in {store.url}: its restic manifest says format "
                f"{manifest.format_version}; refused"
            )
        return manifest
    try:
        raw = b"".join(store.get_stream(f"{ident}/{MANIFEST}"))
    except ObjectNotFound as exc:
        names = {s.id for s in _legacy_backups(store)}
        if ident in names:
            raise VerifyError(f"backup {ident} has no manifest: it is incomplete") from exc
        raise VerifyError(f"no backup {ident} in {store.url}") from exc
    manifest = _checked_manifest(store, ident, raw)
    if manifest.format_version != FORMAT_VERSION:
        # A folder's manifest that points at snapshots: planted, not ours.
        raise VerifyError(
            f"backup {ident} in {store.url}: {MANIFEST} says format {manifest.format_version} "
            "in a format-1 folder; refused"
        )
    return manifest


def _checked_manifest(store: ObjectStore, ident: str, raw: bytes) -> Manifest:
    if len(raw) > MANIFEST_MAX_BYTES:
        raise VerifyError(
            f"backup {ident} in {store.url}: {MANIFEST} is {len(raw)} bytes, more than any "
            "backup of ours writes; the backup is refused"
        )
    try:
        manifest = Manifest.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise VerifyError(f"backup {ident} in {store.url}: {MANIFEST} is refused: {exc}") from exc
    if manifest.id != ident:
        raise VerifyError(
            f"backup {ident} in {store.url}: {MANIFEST} names the id {manifest.id}; "
            "a manifest copied from another backup is refused"
        )
    return manifest


def verify_backup(
    target: BackupTarget, ident: str, *, progress: ProgressCallback | None = None
) -> Manifest:
    """Read every artifact back to its end (old ones: size and SHA-256 checked too).

    Raises ``VerifyError`` naming the first artifact that fails.
    """
    manifest = read_manifest(target, ident)
    for artifact in manifest.artifacts:
        if artifact.snapshot:
            _verify_part(target, artifact, progress)
        else:
            _verify_artifact(target.store, artifact, progress)
        event("backup.verified", id=ident, artifact=artifact.key)
    return manifest


class _Download(io.RawIOBase):
    """A download as a file: counted and hashed as the decompressor reads it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self.size = 0
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self.size += len(chunk)
            self.sha.update(chunk)
            self._pending = chunk
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def drain(self) -> None:
        for chunk in self._chunks:
            self.size += len(chunk)
            self.sha.update(chunk)


def _verify_artifact(
    store: ObjectStore, artifact: Artifact, progress: ProgressCallback | None
) -> None:
    label = f"{artifact.kind} {artifact.name} ({artifact.key})"
    try:
        download = _Download(iter(store.get_stream(artifact.key)))
    except ObjectNotFound as exc:
        raise VerifyError(f"{label}: missing from the target") from exc
    problem: str | None = None
    raw_size = 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], download), read_across_frames=True
        )
        if artifact.format == "tar":
            with tarfile.open(fileobj=reader, mode="r|") as archive:
                for member in archive:
                    if member.isfile():
                        data = archive.extractfile(member)
                        if data is not None:
                            while data.read(1024 * 1024):
                                pass
                    if progress:
                        progress(Progress("verify", label, download.size, download.size))
            raw_size = reader.tell()
        else:
            tail = b""
            while chunk := reader.read(1024 * 1024):
                raw_size += len(chunk)
                tail = (tail + chunk)[-256:]
            if mariadb.TRAILER not in tail:
                problem = "the dump is truncated (no '-- Dump completed' line)"
    except (zstandard.ZstdError, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        problem = f"does not decompress and read to its end: {exc}"
    download.drain()
    if download.size != artifact.size or download.sha.hexdigest() != artifact.sha256:
        raise VerifyError(
            f"{label}: SHA-256 mismatch (stored {download.size} bytes, "
            f"sha256 {download.sha.hexdigest()[:16]}..., manifest says {artifact.size} bytes, "
            f"{artifact.sha256[:16]}...): the object was changed or damaged"
        )
    if problem:
        raise VerifyError(f"{label}: {problem}")
    if progress:
        progress(Progress("verify", label, raw_size, download.size, done=True))


def _verify_part(
    target: BackupTarget, artifact: Artifact, progress: ProgressCallback | None
) -> None:
    """A restic part read back whole (restic authenticates every blob) and checked for its end."""
    label = f"{artifact.kind} {artifact.name} (snapshot {artifact.snapshot[:8]})"
    sink = _TailSink(label, progress)
    try:
        if artifact.kind == "volume":
            restic_backups.dump_volume(
                target,
                snapshot=artifact.snapshot,
                volume=artifact.name,
                limit=restic_backups.volume_limit(artifact.raw_size, artifact.files),
                out=sink,
            )
        else:
            restic_backups.dump_database(
                target,
                snapshot=artifact.snapshot,
                name=artifact.name,
                limit=artifact.raw_size + restic_backups.TAR_MARGIN,
                out=sink,
            )
    except (ResticBackupError, tarfile.TarError) as exc:
        raise VerifyError(f"{label}: {exc}") from exc
    except ResticError as exc:
        # Not Unavailable: a store that cannot be reached says nothing of the backup.
        raise VerifyError(f"{label}: does not read back: {exc}") from exc
    if artifact.kind == "database" and mariadb.TRAILER not in sink.tail:
        raise VerifyError(f"{label}: the dump is truncated (no '-- Dump completed' line)")
    if progress:
        progress(Progress("verify", label, sink.size, sink.size, done=True))


class _TailSink:
    """Counts what it is given and keeps the last bytes; stores nothing."""

    def __init__(self, label: str, progress: ProgressCallback | None) -> None:
        self.label = label
        self.progress = progress
        self.size = 0
        self.tail = b""

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.tail = (self.tail + data[-256:])[-256:]
        if self.progress:
            self.progress(Progress("verify", self.label, self.size, self.size))
        return len(data)

    def flush(self) -> None:
        pass


def prune(target: BackupTarget, rules: RetentionRules, *, dry_run: bool) -> RetentionDecision:
    """Apply retention to the target (both formats); with ``dry_run`` only say what would go.

    Only call after a successful backup (see ``decide.retention``). A complete
    old-format backup loses its manifest first, so one half deleted reads as
    incomplete; a restic one is forgotten whole, then the repository pruned.
    """
    store = target.store
    summaries = list_backups(target)
    decision = decide_retention(
        [BackupRef(s.id, s.time, s.state == "complete") for s in summaries],
        rules,
        now=datetime.now(UTC),
    )
    if dry_run or not decision.delete:
        return decision
    doomed = set(decision.delete)
    in_restic = {b.id: b for b in restic_backups.stored_backups(target, id_time)}
    restic_backups.forget(
        target, [snap for i in doomed if i in in_restic for snap in in_restic[i].snapshots]
    )
    for ident in sorted(doomed & set(in_restic)):
        event("backup.pruned", id=ident)
    doomed -= set(in_restic)
    if not doomed:
        return decision
    keys: dict[str, list[str]] = {}
    for item in store.list(""):
        folder = item.key.partition("/")[0]
        if folder in doomed:
            keys.setdefault(folder, []).append(item.key)
    for ident in [i for i in decision.delete if i in doomed]:
        folder_keys = keys.get(ident, [])
        manifest_key = f"{ident}/{MANIFEST}"
        if manifest_key in folder_keys:
            store.delete([manifest_key])
        store.delete([k for k in folder_keys if k != manifest_key])
        event("backup.pruned", id=ident)
    return decision
