"""Writing one backup to the target: its parts through restic, then its manifest, last.

Volumes are read by restic in a helper container, dumps fed to ``restic backup
--stdin``: nothing of the backup's size touches local disk and memory stays
bounded. The manifest is written only after every part is stored, so a backup
without one is incomplete. Both a backup run (``backing_up.py``) and a
restore's safety copy (``restore/restoring.py``) are written here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from reconciler.adapters import (
    database_helper,
    engine_client,
    mariadb,
    restic,
    restic_helper,
)
from reconciler.adapters.engine_client import Client
from reconciler.backup import restic_backups
from reconciler.backup.backup_target import BackupTarget
from reconciler.backup.manifests import (
    ARTIFACT_LAYOUT,
    RESTIC_FORMAT,
    Artifact,
    Manifest,
    Progress,
    ProgressCallback,
    id_time,
)
from reconciler.concurrency import both
from reconciler.errors import BackupError
from reconciler.logs import event

PROGRESS_EVENT_S = 30.0
# An image with restic for the helpers that read volumes; default: the reconciler's own.
HELPER_IMAGE_VARIABLE = "RECONCILER_HELPER_IMAGE"


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
    folder = ARTIFACT_LAYOUT[kind][0]
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
