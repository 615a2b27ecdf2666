"""The restore ledger: every restore request this VM has seen, and what became of it.

``restores.json`` in the state dir, written atomically (``atomic_write_json``:
temp file, fsync, rename, the previous copy kept as ``.prev``). It is what
makes a request run once: a pass runs only ids the ledger does not know (or
still lists as ``pending``).

States: ``pending`` (seen, not started) -> ``running`` -> ``succeeded`` or
``failed``. A ``running`` entry found by a process that holds the pass lock
was left by a process that died mid-restore (the lock dies with its holder):
``recover`` marks it ``interrupted``, which is final. It is never re-run,
because volumes may be half-written; its ``hint`` says what to do.

Writers hold the pass lock (the pass, ``reconciler restore``), so two never
race on the file; ``reconciler status`` only reads it.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from reconciler.decide.restore_planning import LedgerState
from reconciler.errors import LedgerUnreadable, StateCorrupt
from reconciler.logs import event
from reconciler.model.restore_requests import RestoreRequest
from reconciler.state import names
from reconciler.state.files import atomic_write_json, read_json

LEDGER_FILE = names.RESTORE_LEDGER
# Entries kept; the oldest finished ones go first. An id that falls off could
# run again if it were still in restore.yaml, so the number is generous.
MAX_ENTRIES = 1000

Origin = Literal["restore.yaml", "cli"]


def now() -> datetime:
    return datetime.now(UTC)


class RestoreRecord(BaseModel):
    id: str
    state: LedgerState
    origin: Origin = "restore.yaml"
    commit: str | None = None  # the commit whose restore.yaml asked for it
    requested: str = "latest"  # what the request named: "latest" or a backup id
    backup: str | None = None  # the backup id it resolved to
    source: str | None = None  # where the backup was read from (redacted URL)
    volumes: list[str] | None = None
    databases: list[str] | None = None
    paths: list[str] | None = None  # a partial restore: files or folders of one volume
    queued: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    error: str | None = None
    # Where the current contents went before they were overwritten: a backup
    # source (``s3://bucket/prod/pre-restore/<id>``) holding one backup,
    # restorable with another request naming it as ``source``.
    safety_copy: str | None = None
    safety_copy_backup: str | None = None
    done: list[str] = Field(default_factory=list)  # steps completed, for a failure part way
    # A restore that failed after it began writing: "ok" when the safety copy
    # was put back, else why putting it back failed.
    put_back: str | None = None
    pid: int | None = None
    host: str | None = None

    @property
    def hint(self) -> str | None:
        """What the user should do next, for failed and interrupted requests."""
        if self.state not in ("failed", "interrupted"):
            return None
        undo = (
            "the safety copy was put back: the volumes and databases hold what they held "
            "before this restore"
            if self.put_back == "ok"
            else f"the contents before it are in the safety copy {self.safety_copy} "
            f"(backup {self.safety_copy_backup}): to put them back, commit a new request with "
            f"source: {self.safety_copy}"
            if self.safety_copy and self.safety_copy_backup
            else "nothing was overwritten before the safety copy was complete"
            if self.state == "failed"
            else "no safety copy was complete, so nothing had been overwritten"
        )
        what = (
            "the reconciler stopped in the middle of this restore; volumes and databases may "
            "be half-written"
            if self.state == "interrupted"
            else "this restore failed"
        )
        return f"{what}; {undo}; to try again, commit a request with a new id"

    def to_status(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"pid", "host"})
        data["hint"] = self.hint
        return data


class Ledger(BaseModel):
    restores: list[RestoreRecord] = Field(default_factory=list)

    def get(self, ident: str) -> RestoreRecord | None:
        return next((r for r in self.restores if r.id == ident), None)

    def states(self) -> dict[str, LedgerState]:
        return {r.id: r.state for r in self.restores}


class RestoreLedger:
    """Reads and writes the ledger file; every change is written at once."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LEDGER_FILE

    def load(self) -> Ledger:
        # Never the .prev copy: there a finished request may still be pending,
        # and it would run a second time.
        try:
            raw = read_json(self.path, fallback=False)
        except StateCorrupt as exc:
            raise LedgerUnreadable(
                f"the restore ledger {self.path} is corrupt ({exc}); no restore request runs "
                f"until it is fixed. Inspect it, then either repair it by hand or put back "
                f"{self.path.name}.prev if it holds every finished request (check each id of "
                "restore.yaml: one marked pending there that already ran would run again), "
                "and run reconciler sync"
            ) from exc
        prev = self.path.with_name(self.path.name + ".prev")
        if raw is None and prev.exists():
            raise LedgerUnreadable(
                f"the restore ledger {self.path} is missing but {prev.name} exists; no restore "
                f"request runs until {self.path.name} is put back (copy {prev.name} only if it "
                "holds every finished request), then run reconciler sync"
            )
        if raw is None:
            return Ledger()
        try:
            return Ledger.model_validate(raw)
        except ValidationError as exc:
            # Losing the ledger would re-run every request still in restore.yaml:
            # refuse rather than guess.
            raise LedgerUnreadable(
                f"{self.path} cannot be read ({exc.error_count()} problem(s)); no restore "
                "request runs until it is fixed or moved aside (moving it aside re-runs every "
                "request still in restore.yaml)"
            ) from exc

    def save(self, ledger: Ledger) -> None:
        finished = [r for r in ledger.restores if r.state in ("succeeded", "failed")]
        while len(ledger.restores) > MAX_ENTRIES and finished:
            ledger.restores.remove(finished.pop(0))
        atomic_write_json(self.path, ledger.model_dump(mode="json"))

    def recover(self) -> list[str]:
        """Mark ``running`` entries ``interrupted``; call only while holding the pass lock."""
        ledger = self.load()
        changed = []
        for record in ledger.restores:
            if record.state == "running":
                record.state = "interrupted"
                record.finished = now()
                record.error = (
                    f"interrupted: the reconciler (pid {record.pid} on {record.host}) stopped "
                    "during the restore; it is not run again"
                )
                changed.append(record.id)
                event("restore.interrupted", level=40, id=record.id, safety=record.safety_copy)
        if changed:
            self.save(ledger)
        return changed

    def queue(self, records: list[RestoreRecord]) -> None:
        """Add new requests as ``pending`` (ids already known are left as they are)."""
        ledger = self.load()
        known = {r.id for r in ledger.restores}
        added = False
        for record in records:
            if record.id not in known:
                record.state = "pending"
                record.queued = record.queued or now()
                ledger.restores.append(record)
                added = True
        if added:
            self.save(ledger)

    def update(self, ident: str, **changes: Any) -> RestoreRecord:
        """Change fields of one entry and write the ledger at once."""
        ledger = self.load()
        record = ledger.get(ident)
        if record is None:
            raise KeyError(ident)
        for name, value in changes.items():
            setattr(record, name, value)
        self.save(ledger)
        return record

    def initialised(self) -> bool:
        """Whether this VM has a ledger (the file, or a previous copy: never a fresh start)."""
        return self.path.exists() or self.path.with_name(self.path.name + ".prev").exists()

    def adopt(self, records: list[RestoreRecord]) -> list[str]:
        """Start this VM's ledger with every listed request marked ``skipped``.

        Called at a VM's first pass: the requests in restore.yaml then were
        meant for another VM (or ran here before the state was lost), and
        running them all again, in order, could roll the new VM's data back.
        """
        ledger = self.load()
        known = {r.id for r in ledger.restores}
        adopted = []
        for record in records:
            if record.id in known:
                continue
            record.state = "skipped"
            record.finished = now()
            record.error = (
                "skipped: listed in restore.yaml before this VM's first pass, so not run here; "
                "to run it on this VM, commit a request with a new id"
            )
            ledger.restores.append(record)
            adopted.append(record.id)
        self.save(ledger)
        return adopted

    def start(self, ident: str) -> RestoreRecord:
        return self.update(
            ident,
            state="running",
            started=now(),
            pid=os.getpid(),
            host=socket.gethostname(),
        )


def status_report(state_dir: Path) -> list[dict[str, Any]]:
    """The ledger as ``status --json`` shows it, newest first.

    Read without the pass lock: a ``running`` entry whose process is gone on
    this host is shown as interrupted (the next pass records that).
    """
    try:
        ledger = RestoreLedger(state_dir).load()
    except LedgerUnreadable as exc:
        return [{"id": None, "state": "unknown", "error": str(exc)}]
    out = []
    host = socket.gethostname()
    for record in reversed(ledger.restores):
        if record.state == "running" and record.host == host and not _alive(record.pid):
            record = record.model_copy(
                update={
                    "state": "interrupted",
                    "error": "interrupted: the process running it is gone",
                }
            )
        out.append(record.to_status())
    return out


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pending_record(request: RestoreRequest, *, commit: str | None) -> RestoreRecord:
    """The ledger's first record of a restore.yaml request."""
    return RestoreRecord(
        id=request.id,
        state="pending",
        origin="restore.yaml",
        commit=commit,
        requested=request.backup,
        source=request.source,
        volumes=list(request.volumes) if request.volumes is not None else None,
        databases=list(request.databases) if request.databases is not None else None,
        paths=list(request.paths) if request.paths is not None else None,
    )
