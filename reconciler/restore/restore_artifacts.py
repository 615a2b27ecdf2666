"""Backup artifacts on their way in and out of a restore: fetched, verified, decoded, encoded.

- ``ensure_room``: refuse, before anything is fetched, when the spool folder
  cannot hold a verified copy of every artifact (saying how much it needs);
- ``fetch_verified``: bring an artifact into the spool folder (restic's
  ``dump`` of a part, or an old-format object) and check its size (and, for
  an old one, its SHA-256 and decompressed size) against the manifest;
- ``decompressed``: the artifact's original bytes, from that verified copy
  (never streamed from the store), bounded by the manifest's raw size;
- ``without_schemas``: a MariaDB dump without the server's own ``mysql`` schema.

A restore's safety copy is written by the backup pipeline's own
``backup_writing.write_backup``, and read back here like any backup.

Used by the restore engine (``restoring.py``) and the drill (``restore_drill.py``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import zstandard

from reconciler.backup import restic_backups
from reconciler.backup.backup_target import BackupTarget
from reconciler.decide.restore_planning import ArtifactRef
from reconciler.errors import NoRoom, ObjectNotFound, ResticBackupError, ResticError, VerifyError
from reconciler.state import names
from reconciler.state.files import PRIVATE_DIR_MODE, private_dir, private_file

CHUNK = 1024 * 1024
# Safety copies are short-lived: zstd's fastest level (~1.7x level 3's speed
# on one core, nearly the same ratio on site files) keeps them cheap.
ZSTD_LEVEL = 1
_SPOOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
# Schemas of a dump that are not loaded: the server's accounts stay this environment's.
SKIPPED_SCHEMAS = ("mysql",)


@contextmanager
def spool_folder(state_dir: Path, request_id: str) -> Iterator[Path]:
    """A fresh folder ``restore-tmp/<request_id>`` of the state dir, removed on every way out.

    It is deleted whole, first and last, so its name must never lead out of
    ``restore-tmp``: ids come from restore.yaml and from manifests (``drill-<id>``).
    """
    if not _SPOOL_NAME.fullmatch(request_id):
        raise VerifyError(f"{request_id[:120]!r} cannot name a spool folder; refused")
    folder = contained(state_dir / names.RESTORE_SPOOL, request_id)
    shutil.rmtree(folder, ignore_errors=True)  # left by a killed run
    private_dir(folder.parent)
    folder.mkdir(mode=PRIVATE_DIR_MODE)  # a dump with password hashes passes through
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


MB = 1000 * 1000
# Room left free in the spool folder beyond the artifacts themselves: a full
# disk breaks more than this restore (the state files, the engine).
SPOOL_HEADROOM = 64 * MB
# An authentic artifact decompresses to exactly the manifest's ``raw_size``;
# past this margin it is refused (a planted "zip bomb" with recomputed checksums).
RAW_MARGIN = 1024 * 1024


def room_needed(artifacts: Iterable[ArtifactRef]) -> int:
    """Bytes the spool must have free for ``artifacts``: their stored sizes plus the headroom."""
    return sum(a.size for a in artifacts) + SPOOL_HEADROOM


def room_problem(*, needed: int, free: int, folder: Path) -> str | None:
    """Why ``folder`` cannot hold ``needed`` bytes (None when it can), and how to fix it."""
    if needed <= free:
        return None
    return (
        f"the restore needs {_mb(needed)} MB in {folder} to verify the backup before it "
        f"overwrites anything, {_mb(free)} MB free: free space there, or point "
        "RECONCILER_SPOOL_DIR (env file) at a folder with room; nothing was touched"
    )


def ensure_room(folder: Path, artifacts: Iterable[ArtifactRef]) -> None:
    """Raise ``NoRoom`` unless ``folder``'s file system has room for every artifact."""
    problem = room_problem(
        needed=room_needed(artifacts), free=shutil.disk_usage(folder).free, folder=folder
    )
    if problem is not None:
        raise NoRoom(problem)


def _mb(size: int) -> int:
    return -(-size // MB)  # rounded up: "needs 3 MB" never understates


def raw_limit(artifact: ArtifactRef) -> int | None:
    """The most bytes ``artifact`` may decompress to, from its manifest (None: not said)."""
    return None if artifact.raw_size is None else artifact.raw_size + RAW_MARGIN


def fetch_verified(target: BackupTarget, artifact: ArtifactRef, folder: Path) -> Path:
    """Download one artifact into ``folder`` and authenticate it; its path there.

    A restic part is read back by restic (which authenticates every blob) and
    kept compressed, bounded by the manifest's sizes; an old-format artifact
    is checked against the manifest's size and SHA-256.

    Reading stops past the manifest's size; the copy is kept only when its size
    and SHA-256 are the manifest's and it decompresses to no more than the
    manifest says. Every byte a restore writes comes from such a copy: nothing
    is streamed from the store into a live volume or database.
    """
    path = contained(folder, hashlib.sha256(artifact.key.encode()).hexdigest()[:16])
    if artifact.snapshot:
        return _fetch_part(target, artifact, path)
    store = target.store
    digest = hashlib.sha256()
    size = 0
    label = f"{artifact.kind} {artifact.name} ({artifact.key})"
    try:
        with private_file(path) as out:
            for chunk in store.get_stream(artifact.key):
                digest.update(chunk)
                size += len(chunk)
                if size > artifact.size:
                    break  # longer than the manifest says: refused below, not read to its end
                out.write(chunk)
    except ObjectNotFound as exc:
        path.unlink(missing_ok=True)
        raise VerifyError(f"{label}: missing from {store.url}; the backup is incomplete") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size != artifact.size or digest.hexdigest() != artifact.sha256:
        path.unlink(missing_ok=True)
        read = f"more than {artifact.size}" if size > artifact.size else str(size)
        raise VerifyError(
            f"{label}: SHA-256 mismatch (read {read} bytes, sha256 {digest.hexdigest()[:16]}..., "
            f"the manifest says {artifact.size} bytes, {artifact.sha256[:16]}...): the object "
            "was changed or damaged; the backup is refused"
        )
    try:
        for _chunk in decompressed(artifact, path):
            pass  # counted against the manifest's raw size by decompressed()
    except (VerifyError, zstandard.ZstdError) as exc:
        path.unlink(missing_ok=True)
        raise VerifyError(f"{label}: {exc}; the backup is refused") from exc
    return path


def _fetch_part(target: BackupTarget, artifact: ArtifactRef, path: Path) -> Path:
    label = f"{artifact.kind} {artifact.name} (snapshot {artifact.snapshot[:8]})"
    limit = raw_limit(artifact)
    assert limit is not None  # refs of restic parts always carry their bound
    try:
        restic_backups.spool_part(
            target,
            kind=artifact.kind,
            snapshot=artifact.snapshot,
            name=artifact.name,
            limit=limit,
            spooled=path,
        )
    except (ResticBackupError, tarfile.TarError) as exc:
        path.unlink(missing_ok=True)
        raise VerifyError(f"{label}: {exc}; the backup is refused") from exc
    except ResticError as exc:
        # Not Unavailable: a store that cannot be reached says nothing of the backup.
        path.unlink(missing_ok=True)
        raise VerifyError(f"{label}: does not read back: {exc}; the backup is refused") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def contained(parent: Path, name: str) -> Path:
    """``parent / name``, checked to be a direct child of ``parent`` (resolved).

    The second guard under the name patterns: a path built from something
    read from a store or a request is deleted or overwritten later, so it
    must not lead anywhere else, whatever the name holds.
    """
    path = parent / name
    if not name or "/" in name or path.resolve().parent != parent.resolve():
        raise VerifyError(f"{name[:120]!r} cannot name a file or folder in {parent}; refused")
    return path


class ChunkReader:
    """An iterator of chunks as a readable file, hashing what passes through.

    Keeps an offset into the current chunk instead of slicing it, so reading
    in small blocks (tarfile reads 10 KiB at a time) copies each byte once.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._offset = 0
        self.digest = hashlib.sha256()

    def _next(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.digest.update(chunk)
        self._chunk, self._offset = chunk, 0
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            parts = [self._chunk[self._offset :]]
            while self._next():
                parts.append(self._chunk)
            self._chunk, self._offset = b"", 0
            return b"".join(parts)
        out = bytearray()
        while len(out) < size:
            if self._offset >= len(self._chunk) and not self._next():
                break
            take = min(size - len(out), len(self._chunk) - self._offset)
            out += self._chunk[self._offset : self._offset + take]
            self._offset += take
        return bytes(out)

    def drain(self) -> None:
        while self._next():
            pass


def decompressed(artifact: ArtifactRef, spooled: Path) -> Iterator[bytes]:
    """The artifact's original bytes, from its verified copy (``fetch_verified``).

    Raises ``VerifyError`` as soon as it yields more than the manifest's raw
    size allows, so a planted archive cannot fill a volume or the disk.
    """
    limit = raw_limit(artifact)
    total = 0
    with open(spooled, "rb") as source:
        reader = zstandard.ZstdDecompressor().stream_reader(
            source, read_across_frames=True, closefd=False
        )
        while chunk := reader.read(CHUNK):
            total += len(chunk)
            if limit is not None and total > limit:
                raise VerifyError(
                    f"{artifact.key} decompresses to more than the {artifact.raw_size} bytes "
                    "its manifest says"
                )
            yield chunk


_MARKER = b"\n-- Current Database: `"


def without_schemas(
    chunks: Iterable[bytes], skipped: tuple[str, ...] = SKIPPED_SCHEMAS
) -> Iterator[bytes]:
    """A ``mariadb-dump --all-databases`` stream without the sections of ``skipped`` schemas.

    mariadb-dump opens each database's section with ``-- Current Database:
    `name```; everything from such a marker to the next one is left out. Works
    on chunks (a marker may straddle two) without splitting the stream in lines.
    """
    names = tuple(f"{name}`".encode() for name in skipped)
    window = len(_MARKER) + max((len(n) for n in names), default=1)
    keep = True
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        out = bytearray()
        position = 0  # start of what is not yet emitted nor dropped
        search = 0
        while (found := data.find(_MARKER, search)) >= 0:
            name = data[found + len(_MARKER) : found + window]
            if len(name) < window - len(_MARKER) and b"`" not in name:
                break  # undecided: the name goes on in the next chunk
            if keep:
                out += data[position:found]
            keep = not name.startswith(names)
            position = found
            search = found + 1
        # Hold back the tail that could hold the start of a marker.
        cut = max(position, len(data) - window)
        if keep:
            out += data[position:cut]
        carry = data[cut:]
        if out:
            yield bytes(out)
    if keep and carry:
        yield carry
