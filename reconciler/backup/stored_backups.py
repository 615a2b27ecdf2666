"""The backups stored in a target, read back: listing, the checked manifest, verify, prune.

Both formats: restic-format backups (snapshots in the target's repository,
``restic_backups.py``) and old format-1 folders (zstd objects beside their
``manifest.json``). A backup without its manifest is incomplete: listed as
such, never restored, deleted by the next prune. ``verify_backup`` downloads
every artifact, checks every SHA-256 of the old format and reads every archive
to its end; ``prune`` applies retention (``decide/retention.py``).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, cast

import zstandard

from reconciler.adapters import mariadb
from reconciler.adapters.object_store import ObjectStore
from reconciler.backup import restic_backups
from reconciler.backup.backup_target import BackupTarget
from reconciler.backup.manifests import (
    FORMAT_VERSION,
    ID_PATTERN,
    MANIFEST,
    MANIFEST_MAX_BYTES,
    RESTIC_FORMAT,
    Artifact,
    BackupSummary,
    Manifest,
    Progress,
    ProgressCallback,
    id_time,
)
from reconciler.decide.retention import (
    BackupRef,
    RetentionDecision,
    RetentionRules,
    decide_retention,
)
from reconciler.errors import ObjectNotFound, ResticBackupError, ResticError, VerifyError
from reconciler.logs import event


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
    if not ID_PATTERN.fullmatch(ident):
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


def prune(
    target: BackupTarget,
    rules: RetentionRules,
    *,
    dry_run: bool,
    now: datetime | None = None,
) -> RetentionDecision:
    """Apply retention to the target (both formats); with ``dry_run`` only say what would go.

    ``now`` is the time the rules count back from (default: the clock's): a
    backup run passes its own clock, so the days it keeps are the days it counts.

    Only call after a successful backup (see ``decide.retention``). A complete
    old-format backup loses its manifest first, so one half deleted reads as
    incomplete; a restic one is forgotten whole, then the repository pruned.
    """
    store = target.store
    summaries = list_backups(target)
    decision = decide_retention(
        [BackupRef(s.id, s.time, s.state == "complete") for s in summaries],
        rules,
        now=now or datetime.now(UTC),
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
