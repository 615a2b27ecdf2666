"""The last backup's result, kept in the state dir for ``reconciler status``.

One small JSON file, replaced atomically (temporary file, fsync, rename), so a
crash mid-write leaves the previous result rather than half a file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from reconciler.state import names
from reconciler.state.files import replace_file

STATUS_FILE = names.BACKUP_STATUS


@dataclass(frozen=True)
class BackupStatus:
    time: str  # ISO 8601, UTC: when the attempt started
    result: Literal["ok", "failed"]
    id: str | None = None
    target: str | None = None
    size: int | None = None  # bytes stored
    duration_s: float | None = None
    error: str | None = None
    # The last successful backup, kept across failures: the daemon's
    # "missed backup" check and status both read it.
    last_success_time: str | None = None
    last_success_id: str | None = None
    last_success_size: int | None = None  # bytes: the metrics' last good backup size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_status(state_dir: Path, status: BackupStatus) -> None:
    payload = json.dumps(status.to_dict(), indent=2) + "\n"
    replace_file(state_dir / STATUS_FILE, payload.encode())


def read_status(state_dir: Path) -> BackupStatus | None:
    """The last recorded result, or None when no backup ran yet (or the file is unreadable)."""
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
        return BackupStatus(**data)
    except (OSError, ValueError, TypeError):
        return None


def last_success(state_dir: Path) -> datetime | None:
    status = read_status(state_dir)
    if status is None or status.last_success_time is None:
        return None
    return datetime.fromisoformat(status.last_success_time)


def record(state_dir: Path, attempt: BackupStatus) -> BackupStatus:
    """Write ``attempt``, carrying the last success forward from the previous record."""
    previous = read_status(state_dir)
    if attempt.result == "ok":
        attempt = BackupStatus(
            **{
                **attempt.to_dict(),
                "last_success_time": attempt.time,
                "last_success_id": attempt.id,
                "last_success_size": attempt.size,
            }
        )
    elif previous is not None:
        attempt = BackupStatus(
            **{
                **attempt.to_dict(),
                "last_success_time": previous.last_success_time,
                "last_success_id": previous.last_success_id,
                "last_success_size": previous.last_success_size,
            }
        )
    write_status(state_dir, attempt)
    return attempt
