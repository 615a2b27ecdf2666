"""Backups in the restic repository of a target (format 2).

One backup is a set of restic snapshots that share the tag ``backup=<id>``:

- one per volume, made by restic in a helper container that mounts the volume
  read-only at ``/volume/<name>`` (restic's change detection makes a backup
  of unchanged files a scan), tagged ``part=volume:<name>``;
- one per database, the ``mariadb-dump`` stream fed to ``restic backup
  --stdin`` as ``/<service>.sql``, tagged ``part=database:<service>``;
- last, ``/manifest.json`` (which snapshot holds what), tagged ``manifest``
  and ``size=<bytes added>``: its presence is what makes the backup complete.

Every snapshot carries ``reconciler`` and the project as restic's host, so
restic finds the previous snapshot of a volume as its parent whatever the
reconciler's own container is called.

Reading back: ``restic dump`` of a part, authenticated by restic as it reads,
is written compressed into the restore's spool folder, bounded by what the
manifest says. A volume's tar comes out of restic under ``volume/<name>/``;
it is re-packed on the way with names relative to the volume (as the old
format has them), so that the screening judges links against the volume and
not against restic's folder layout.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import zstandard

from reconciler.adapters import restic
from reconciler.adapters.restic_helper import HelperRunner, volume_path
from reconciler.backup.backup_target import SAFETY_TAG, BackupTarget
from reconciler.decide.archive_members import SOCKET_TYPE
from reconciler.errors import RepositoryNotFound, ResticBackupError, ResticError
from reconciler.state.files import private_file

APP_TAG = "reconciler"
MANIFEST_TAG = "manifest"
MANIFEST_FILE = "manifest.json"
SPOOL_ZSTD_LEVEL = 1
CHUNK = 1024 * 1024
# A tar of N files is their bytes plus a header (and padding) per member; a
# pax header for long names or xattrs adds about as much again.
TAR_OVERHEAD_PER_FILE = 3 * tarfile.BLOCKSIZE
TAR_MARGIN = 1024 * 1024


def backup_tag(ident: str) -> str:
    return f"backup={ident}"


def part_tag(kind: str, name: str) -> str:
    return f"part={kind}:{name}"


@dataclass(frozen=True)
class PartWritten:
    snapshot: str  # full snapshot id
    size: int  # bytes restic added to the repository
    raw_size: int  # bytes read (file contents, or the dump)
    files: int


@dataclass(frozen=True)
class StoredBackup:
    """One backup as the snapshot list shows it (nothing read from its manifest yet)."""

    id: str
    time: datetime
    complete: bool
    size: int
    snapshots: tuple[str, ...]
    manifest_snapshot: str | None


def volume_part(
    target: BackupTarget,
    *,
    runner: HelperRunner,
    name: str,
    ident: str,
    time: datetime,
    host: str,
    on_progress: restic.ProgressCallback | None = None,
) -> PartWritten:
    """Back up the volume the helper mounts for compose key ``name``, as ``/volume/<name>``."""
    target.listing = None
    summary = target.repository(runner).backup_folder(
        volume_path(name),
        tags=[APP_TAG, backup_tag(ident), part_tag("volume", name), *target.tags],
        host=host,
        time=time,
        on_progress=on_progress,
    )
    return _written(summary)


def database_part(
    target: BackupTarget,
    *,
    chunks: Iterable[bytes],
    name: str,
    ident: str,
    time: datetime,
    host: str,
    trailer: bytes,
    on_progress: restic.ProgressCallback | None = None,
) -> PartWritten:
    """Feed a dump stream to ``restic backup --stdin``; a cut or failed dump fails the part.

    restic stores whatever reaches its stdin: when the dump breaks, the feed
    ends early and restic makes a snapshot of half a dump. That snapshot is
    refused here (the error from the stream, or a missing trailer), and with
    no manifest the backup stays incomplete.
    """
    repo = target.repository()
    stream = _ChunkStream(chunks)
    target.listing = None
    try:
        summary = repo.backup_stdin(
            stream,  # type: ignore[arg-type]  # a readable is all restic's feeder needs
            filename=f"{name}.sql",
            tags=[APP_TAG, backup_tag(ident), part_tag("database", name), *target.tags],
            host=host,
            time=time,
            on_progress=on_progress,
        )
    except ResticError:
        # restic's complaint about its input hides the cause: the dump's own error.
        if stream.error is not None:
            raise stream.error from None
        raise
    if stream.error is not None:
        raise stream.error
    if trailer not in stream.tail:
        raise ResticBackupError(f"database {name}: the dump is truncated (no trailer)")
    return _written(summary)


def manifest_part(
    target: BackupTarget, *, manifest_json: bytes, ident: str, size: int, time: datetime, host: str
) -> str:
    target.listing = None
    summary = target.repository().backup_stdin(
        io.BytesIO(manifest_json),
        filename=MANIFEST_FILE,
        tags=[APP_TAG, backup_tag(ident), MANIFEST_TAG, f"size={size}", *target.tags],
        host=host,
        time=time,
    )
    return summary.snapshot_id


def _written(summary: restic.BackupSummary) -> PartWritten:
    return PartWritten(
        snapshot=summary.snapshot_id,
        size=summary.data_added,
        raw_size=summary.total_bytes_processed,
        files=summary.total_files_processed,
    )


def full_ids(target: BackupTarget, ident: str, parts: Iterable[PartWritten]) -> list[PartWritten]:
    """``parts`` with restic's full snapshot ids (its 0.14 summary prints the short one).

    One listing for all of them, taken right after they were written.
    """
    tags = [APP_TAG, backup_tag(ident), *target.tags]
    listed = [s.id for s in target.repository().snapshots(tags=tags)]
    done = []
    for part in parts:
        matches = [i for i in listed if i.startswith(part.snapshot)]
        if len(matches) != 1:
            raise ResticBackupError(f"restic made snapshot {part.snapshot} but does not list it")
        done.append(dataclasses.replace(part, snapshot=matches[0]))
    return done


class _ChunkStream:
    """An iterator of chunks as a readable for restic's stdin; keeps its error and its tail."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""
        self.error: BaseException | None = None
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            try:
                chunk = next(self._chunks, None)
            except Exception as exc:
                self.error = exc
                return b""
            if chunk is None:
                return b""
            self.tail = (self.tail + chunk)[-256:]
            self._pending = chunk
        if size < 0 or size >= len(self._pending):
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out


# --- listing -------------------------------------------------------------------------------


def stored_backups(
    target: BackupTarget, is_id: Callable[[str], datetime | None]
) -> list[StoredBackup]:
    """Every restic-format backup of the target (none when there is no repository yet).

    Tags are read from the repository, so they are checked: a snapshot whose
    backup tag is not an id, or that carries two, is not ours and is skipped.
    A target lists either its own backups or, for a safety copy's URL, only
    the copies of that request: never both (backup_target.py).
    """
    if target.legacy_only:
        return []
    if target.listing is not None:
        return list(target.listing)
    try:
        snapshots = target.repository().snapshots(tags=[APP_TAG])
    except RepositoryNotFound:
        target.absent = True
        target.listing = []
        return []
    target.absent = False
    groups: dict[str, list[restic.Snapshot]] = {}
    for snapshot in snapshots:
        idents = [t.removeprefix("backup=") for t in snapshot.tags if t.startswith("backup=")]
        if len(idents) != 1 or is_id(idents[0]) is None:
            continue
        copies = [t for t in snapshot.tags if t.startswith(f"{SAFETY_TAG}=")]
        if copies != target.tags:
            continue
        groups.setdefault(idents[0], []).append(snapshot)
    found = []
    for ident, members in groups.items():
        when = is_id(ident)
        assert when is not None
        manifests = [s for s in members if MANIFEST_TAG in s.tags]
        size = 0
        if len(manifests) == 1:
            sizes = [t.removeprefix("size=") for t in manifests[0].tags if t.startswith("size=")]
            size = int(sizes[0]) if len(sizes) == 1 and sizes[0].isdigit() else 0
        found.append(
            StoredBackup(
                id=ident,
                time=when,
                complete=len(manifests) == 1,
                size=size,
                snapshots=tuple(s.id for s in members),
                manifest_snapshot=manifests[0].id if len(manifests) == 1 else None,
            )
        )
    target.listing = found
    return list(found)


def ensure_repository(target: BackupTarget, is_id: Callable[[str], datetime | None]) -> None:
    """Make the target's repository when the listing found none (one ``restic init``)."""
    stored_backups(target, is_id)
    if target.absent:
        target.repository().ensure()
        target.absent = False


def read_manifest_bytes(target: BackupTarget, stored: StoredBackup, limit: int) -> bytes:
    """The raw ``manifest.json`` of a complete backup, at most ``limit`` bytes."""
    assert stored.manifest_snapshot is not None
    buffer = io.BytesIO()
    sink = _Bounded(buffer, limit, what=f"backup {stored.id}: {MANIFEST_FILE}")
    target.repository().dump(stored.manifest_snapshot, f"/{MANIFEST_FILE}", sink)  # type: ignore[arg-type]
    return buffer.getvalue()


def forget(target: BackupTarget, snapshots: Iterable[str]) -> None:
    """Forget ``snapshots`` and prune what no other snapshot uses."""
    ids = sorted(set(snapshots))
    if not ids:
        return
    target.listing = None
    # One command: each opens the key. Stale locks a killed run left are
    # ignored by restic itself (a dead process here, or 30 minutes old).
    target.repository().forget_ids(ids, prune=True)


# --- reading a part back -------------------------------------------------------------------


class _Bounded:
    """A writable that refuses more than ``limit`` bytes (restic is killed when it raises)."""

    def __init__(self, inner: IO[bytes] | Any, limit: int, *, what: str) -> None:
        self.inner = inner
        self.limit = limit
        self.what = what
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise ResticBackupError(
                f"{self.what} is longer than its manifest says ({self.limit} bytes at most); "
                "the backup is refused"
            )
        return int(self.inner.write(data))


def spool_part(
    target: BackupTarget, *, kind: str, snapshot: str, name: str, limit: int, spooled: Path
) -> None:
    """A part of a backup, read back and compressed into ``spooled`` (a private file)."""
    with private_file(spooled) as out:
        compressor = zstandard.ZstdCompressor(level=SPOOL_ZSTD_LEVEL).stream_writer(
            out, closefd=False
        )
        if kind == "volume":
            dump_volume(target, snapshot=snapshot, volume=name, limit=limit, out=compressor)
        else:
            dump_database(target, snapshot=snapshot, name=name, limit=limit, out=compressor)
        compressor.flush(zstandard.FLUSH_FRAME)


def dump_database(target: BackupTarget, *, snapshot: str, name: str, limit: int, out: Any) -> None:
    """``/<name>.sql`` of ``snapshot`` into ``out``, at most ``limit`` bytes."""
    sink = _Bounded(out, limit, what=f"database {name}")
    target.repository().dump(snapshot, f"/{name}.sql", sink)  # type: ignore[arg-type]


def dump_volume(target: BackupTarget, *, snapshot: str, volume: str, limit: int, out: Any) -> None:
    """The volume's files of ``snapshot`` as a tar into ``out``, names relative to the volume.

    restic writes its tar into a pipe; a thread re-packs it member by member.
    A member outside ``volume/<volume>/`` is refused, and more than ``limit``
    bytes from restic stop it.
    """
    prefix = volume_path(volume).lstrip("/")
    nodes = _node_times(target, snapshot, volume_path(volume))
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def repack() -> None:
        # Closing the read end on a failure unblocks restic: its next write gets EPIPE.
        with os.fdopen(read_fd, "rb") as source:
            try:
                _repacked(source, prefix, out, nodes)
                while source.read(CHUNK):
                    pass  # restic pads its tar past the end marker
            except BaseException as exc:
                failure.append(exc)

    worker = threading.Thread(target=repack, daemon=True)
    worker.start()
    pipe = os.fdopen(write_fd, "wb")
    sink = _Bounded(pipe, limit, what=f"volume {volume}")
    try:
        target.repository().dump(snapshot, volume_path(volume), sink)  # type: ignore[arg-type]
    except (BrokenPipeError, ResticBackupError, ResticError) as exc:
        if not failure:
            raise
        raise failure[0] from exc
    finally:
        with suppress(BrokenPipeError):
            pipe.close()
        worker.join()
    if failure:
        raise failure[0]


@dataclass(frozen=True)
class _Node:
    mtime: str  # seconds.nanoseconds, as a pax header carries it
    mode: int  # permission bits (and the sticky bit)
    uid: int
    gid: int
    type: str = "file"  # restic's: file, dir, symlink, dev, chardev, fifo, socket


def _node_times(target: BackupTarget, snapshot: str, path: str) -> dict[str, _Node]:
    """Each node's exact mtime (and the volume root's mode), by path relative to ``path``.

    restic 0.14's ``dump`` writes a tar with mtimes rounded to the second and
    without the dumped folder itself; ``ls`` has both exactly.
    """
    nodes: dict[str, _Node] = {}

    def keep(node: dict[str, Any]) -> None:
        where = str(node.get("path", ""))
        if where == path:
            relative = "."
        elif where.startswith(path + "/"):
            relative = "./" + where[len(path) + 1 :]
        else:
            return
        stamp = _pax_time(str(node.get("mtime", "")))
        mode, uid, gid = node.get("mode"), node.get("uid"), node.get("gid")
        if stamp is None or not (
            isinstance(mode, int) and isinstance(uid, int) and isinstance(gid, int)
        ):
            return
        # Go's FileMode: permissions in the low bits, sticky at bit 20.
        permissions = (mode & 0o777) | (0o1000 if mode & (1 << 20) else 0)
        nodes[relative] = _Node(stamp, permissions, uid, gid, str(node.get("type", "")))

    target.repository().ls(snapshot, path, keep)
    return nodes


# Go's FileMode bits restic stores: setuid, setgid and sticky as POSIX has them.
_GO_SETUID, _GO_SETGID, _GO_STICKY = 1 << 23, 1 << 22, 1 << 20
# restic's node types as tar's: what the screening judges (decide/archive_members.py).
_NODE_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "dev": tarfile.BLKTYPE,
    "socket": SOCKET_TYPE,
}


def volume_members(
    target: BackupTarget,
    *,
    snapshot: str,
    volume: str,
    on_member: Callable[[tarfile.TarInfo, str], None],
) -> None:
    """Each node of the volume's tree in ``snapshot``, as a tar member named like ``./x``.

    From ``restic ls``: names, types, modes, owners and sizes, read (and
    authenticated) from the snapshot's trees without a byte of file data.
    ``on_member`` gets the member and the node's own name; a symbolic link's
    target is not in restic 0.14's listing (the staged link is judged).
    A node that restic's listing shows malformed refuses the backup.
    """
    path = volume_path(volume)

    def node(data: dict[str, Any]) -> None:
        where = str(data.get("path", ""))
        if where == path:
            member = tarfile.TarInfo(".")
        elif where.startswith(path + "/"):
            member = tarfile.TarInfo("./" + where[len(path) + 1 :])
        else:
            return  # the folders above the volume's, which restic lists too
        kind, mode, uid, gid = data.get("type"), data.get("mode"), data.get("uid"), data.get("gid")
        size = data.get("size", 0)
        if not (
            isinstance(kind, str)
            and isinstance(mode, int)
            and isinstance(uid, int)
            and isinstance(gid, int)
            and isinstance(size, int)
            and size >= 0
        ):
            raise ResticBackupError(f"restic lists {where[:200]!r} without its type, mode or owner")
        member.type = _NODE_TYPES.get(kind, b"?")
        member.mode = (
            (mode & 0o777)
            | (0o4000 if mode & _GO_SETUID else 0)
            | (0o2000 if mode & _GO_SETGID else 0)
            | (0o1000 if mode & _GO_STICKY else 0)
        )
        member.uid, member.gid = uid, gid
        member.size = size if kind == "file" else 0
        on_member(member, str(data.get("name", "")))

    target.repository().ls(snapshot, path, node)


_GO_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def _pax_time(text: str) -> str | None:
    match = _GO_TIME.match(text)
    if match is None:
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    seconds = int(datetime.fromisoformat(match.group(1) + zone).timestamp())
    nanos = (match.group(2) or "").ljust(9, "0")
    return f"{seconds}.{nanos}"


# restic's node types that its tar shows as files; the tar types they are.
_SPECIAL_TYPES = {
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "dev": tarfile.BLKTYPE,
    "socket": SOCKET_TYPE,
}


def _repacked(source: IO[bytes], prefix: str, sink: Any, nodes: dict[str, _Node]) -> None:
    with (
        tarfile.open(fileobj=source, mode="r|") as archive,
        tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out,
    ):
        root = nodes.get(".")
        if root is not None:
            # The volume's own folder: its mode and owner come back too.
            folder = tarfile.TarInfo(".")
            folder.type = tarfile.DIRTYPE
            folder.mode, folder.uid, folder.gid = root.mode, root.uid, root.gid
            folder.mtime = int(root.mtime.split(".")[0])
            folder.pax_headers = {"mtime": root.mtime}
            out.addfile(folder)
        for member in archive:
            name = member.name.rstrip("/")
            if name == prefix:
                member.name = "."
            elif name.startswith(prefix + "/"):
                member.name = "./" + name[len(prefix) + 1 :]
            else:
                raise ResticBackupError(
                    f"restic's archive holds {member.name[:200]!r}, outside {prefix}/; refused"
                )
            if member.islnk():
                link = member.linkname.rstrip("/")
                if not link.startswith(prefix + "/"):
                    raise ResticBackupError(
                        f"a hard link to {member.linkname[:200]!r}, outside {prefix}/; refused"
                    )
                member.linkname = "./" + link[len(prefix) + 1 :]
            # The old names must not come back from the pax header.
            member.pax_headers = {
                k: v for k, v in member.pax_headers.items() if k not in ("path", "linkpath")
            }
            node = nodes.get(member.name)
            if node is not None:
                member.mtime = int(node.mtime.split(".")[0])
                member.pax_headers["mtime"] = node.mtime
                if node.type in _SPECIAL_TYPES:
                    # restic 0.14's dump writes a fifo or a device as an empty
                    # file; it is shown as what it is, for the screening to judge.
                    member.type, member.size = _SPECIAL_TYPES[node.type], 0
            data = archive.extractfile(member) if member.isreg() else None
            out.addfile(member, data)


def volume_limit(raw_size: int, files: int) -> int:
    """The most bytes restic's tar of a volume may have, from what the backup read."""
    return raw_size + TAR_OVERHEAD_PER_FILE * (files + 1) + TAR_MARGIN
