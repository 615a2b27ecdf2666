"""What a backup is as data: its id, its manifest and artifacts, a listing's summary.

A backup is the folder ``<id>/`` in the target (id from the UTC start time,
``2026-11-27T05-04-00Z``). ``Manifest.from_json`` is the checked parsing of a
manifest read back from a store: whoever can write to the store can write that
file, so every field is checked before it names a key or a path. ``Progress``
is the step that writing a backup (``backup_writing.py``) and reading one back
(``stored_backups.py``) both report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

FORMAT_VERSION = 1  # zstd artifacts and manifest.json in <id>/: read, never written
RESTIC_FORMAT = 2  # snapshots in the target's restic repository (backup/restic_backups.py)
MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 1024 * 1024  # ours are a few KB: a bigger one is not ours
ID_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z$")
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
        ident = _checked(data, "id", str, ID_PATTERN)
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
ARTIFACT_LAYOUT = {
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
        if kind not in ARTIFACT_LAYOUT:
            raise ValueError(f"kind: {kind[:40]!r} is neither volume nor database")
        folder, suffix, fmt = ARTIFACT_LAYOUT[kind]
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
        kind=kind,  # type: ignore[arg-type]  # one of ARTIFACT_LAYOUT's keys
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
        kind=kind,  # type: ignore[arg-type]  # one of ARTIFACT_LAYOUT's keys
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


def backup_id(at: datetime) -> str:
    return at.astimezone(UTC).strftime(_ID_FORMAT)


def id_time(backup: str) -> datetime | None:
    """The UTC time a backup id names, or None when it is not a backup id."""
    if not ID_PATTERN.fullmatch(backup):
        return None
    return datetime.strptime(backup, _ID_FORMAT).replace(tzinfo=UTC)
