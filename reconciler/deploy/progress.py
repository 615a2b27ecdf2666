"""A deploy in progress, for ``status``: which commit, which step, since when.

Flux shows a Kustomization being applied as ``Reconciling``; without it, a
``status`` in the middle of a deploy showed the old commit as Ready beside
two rows of the same service. The pass writes ``deploy-progress.json`` when
it starts to apply and at each action, and removes it when the pass ends.

A file is believed only while the pass lock is held: a killed pass leaves
its file behind, and the lock (an flock, dropped by the kernel with its
holder) says that no deploy runs any more. The next pass removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.errors import StateError
from reconciler.state import names
from reconciler.state.files import replace_file

PROGRESS_FILE = names.DEPLOY_PROGRESS
PASS_LOCK_FILE = names.PASS_LOCK

ApplyListener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Progress:
    commit: str
    step: str
    since: str  # when the deploy of this commit started (ISO 8601, UTC)
    actions: int

    def to_status(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "step": self.step,
            "since": self.since,
            "actions": self.actions,
        }


class ProgressFile:
    """Written by the pass; read by ``status`` (another process)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PROGRESS_FILE
        self.lock_path = state_dir / PASS_LOCK_FILE
        self.current: Progress | None = None

    def begin(self, commit: str, *, actions: int) -> None:
        since = datetime.now(UTC).isoformat(timespec="seconds")
        self._write(Progress(commit=commit, step="preparing images", since=since, actions=actions))

    def step(self, text: str) -> None:
        if self.current is not None:
            self._write(
                Progress(self.current.commit, text, self.current.since, self.current.actions)
            )

    def end(self) -> None:
        self.current = None
        # Left behind, it is harmless: status believes it only under the pass lock.
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def listening(self, then: ApplyListener) -> ApplyListener:
        """An apply listener that records each action as it starts, then calls ``then``."""

        def on_event(name: str, fields: dict[str, Any]) -> None:
            if name == "action.start" and isinstance(fields.get("action"), str):
                self.step(fields["action"])
            then(name, fields)

        return on_event

    def read(self) -> Progress | None:
        """The deploy that runs now, or None (none runs, or the file is a dead pass's)."""
        if not self.path.exists() or not self._pass_running():
            return None
        try:
            raw = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None  # gone meanwhile: the deploy ended
        if not isinstance(raw, dict):
            return None
        try:
            return Progress(
                commit=str(raw["commit"]),
                step=str(raw["step"]),
                since=str(raw["since"]),
                actions=int(raw["actions"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def _write(self, progress: Progress) -> None:
        self.current = progress
        # Not fsynced: it only matters while this process lives; and a full
        # disk must not fail a deploy over a progress line.
        with contextlib.suppress(StateError):
            replace_file(self.path, json.dumps(progress.to_status()).encode(), durable=False)

    def _pass_running(self) -> bool:
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True  # held by a pass
        finally:
            os.close(fd)
        return False
