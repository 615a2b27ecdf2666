"""Status is data: what the last passes did, kept in the state folder.

Like a Flux Kustomization's status: the last attempted and the last applied
commit are kept apart, a Ready condition carries a reason and a message, and a
short history tells what happened before. ``reconciler status --json`` prints
it; the daemon writes it once at the end of every pass.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from reconciler.logs import event
from reconciler.state import names
from reconciler.state.files import atomic_write_json, read_json

HISTORY_LENGTH = 20

PassResult = Literal["succeeded", "failed", "stalled", "unavailable"]
# Why the Ready condition is what it is (Flux-style reasons).
Reason = Literal[
    "ReconciliationSucceeded",  # applied and converged
    "ValidationFailed",  # the commit's desired state is invalid: stalled until a new commit
    "VerificationFailed",  # the commit is not signed by an allowed key: stalled until a new commit
    "Conflict",  # an object we do not own is in the way
    "ImageUnavailable",  # an image can be neither found, pulled nor built
    "ApplyFailed",  # a change failed part way (maybe rolled back)
    "SourceUnavailable",  # git cannot be reached
    "EngineUnavailable",  # Docker cannot be reached
    "StateUnavailable",  # the state folder cannot be written
    "Progressing",  # never synced yet
    "InternalError",  # a bug: logged with its traceback, the daemon carries on
]


def now() -> datetime:
    return datetime.now(UTC)


class HistoryEntry(BaseModel):
    time: datetime
    commit: str | None
    result: PassResult
    reason: Reason
    message: str = ""
    changes: list[str] = []
    duration_s: float = 0.0


class Status(BaseModel):
    project: str | None = None
    repo: str | None = None  # redacted
    branch: str | None = None
    applied_commit: str | None = None
    applied_at: datetime | None = None
    # How the applied commit runs: on the engine, or as Swarm services (backups
    # and restores of it act the same way).
    applied_engine: Literal["engine", "swarm"] = "engine"
    attempted_commit: str | None = None
    last_sync: datetime | None = None
    last_result: PassResult | None = None
    last_duration_s: float | None = None
    ready: bool = False
    reason: Reason = "Progressing"
    last_error: str | None = None
    # The commit that last failed validation: a pass does not retry it, only a new commit.
    stalled_commit: str | None = None
    consecutive_failures: int = 0
    history: list[HistoryEntry] = Field(default_factory=list)

    def record(self, entry: HistoryEntry) -> None:
        self.history = [entry, *self.history][:HISTORY_LENGTH]


class StatusStore:
    """Reads and writes ``status.json`` in the state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / names.STATUS

    def load(self) -> Status:
        raw = read_json(self.path)
        if raw is None:
            return Status()
        try:
            return Status.model_validate(raw)
        except ValidationError as exc:
            event("state.unreadable", level=40, file=str(self.path), error=str(exc))
            return Status()

    def save(self, status: Status) -> None:
        atomic_write_json(self.path, status.model_dump(mode="json"))
