"""Services a backup stops, written down before each stop, so a killed backup is undone.

A backup of a ``stop_services`` volume holds the pass lock while it keeps the
volume's services stopped. When it dies (SIGKILL, the OOM killer, a reboot of
the container) the lock dies with it, but the engine finishes a stop it was
already asked for: the next pass could see the container still running, plan
nothing, report converged, and the container exits a moment later (found by
tests/faults/test_kill_backup.py: web stayed ``exited`` until a later pass).

So the backup records each container (its id, and the start time of the run it
is stopping) in ``backup-stops.json`` *before* asking the engine to stop it, and
clears the file once it has started them all again. Whoever next holds the pass
lock (a pass, a backup, a restore by hand) calls ``finish_interrupted_stops``
first: each recorded container still in the run the backup meant to stop is
stopped (which waits out a stop in flight) and started again; one that is
stopped is started. The pass lock guarantees the writer of a file found there
is dead: a live backup clears it before it lets the lock go.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from reconciler.errors import Unavailable
from reconciler.logs import event
from reconciler.statefiles import atomic_write_json, read_json

JOURNAL = "backup-stops.json"


@dataclass(frozen=True)
class StoppedContainer:
    id: str
    name: str
    started_at: str  # State.StartedAt of the run the backup stopped
    grace_s: int


class StopJournal:
    """The containers one backup has stopped (or is stopping), kept on disk."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL
        self.entries: list[StoppedContainer] = []

    def about_to_stop(self, container: Any, *, grace_s: int) -> None:
        """Write ``container`` down; call before the engine is asked to stop it."""
        container.reload()  # the start time of the run that is about to be stopped
        state = container.attrs.get("State") or {}
        self.entries.append(
            StoppedContainer(
                id=str(container.id),
                name=str(container.name),
                started_at=str(state.get("StartedAt", "")),
                grace_s=grace_s,
            )
        )
        atomic_write_json(self.path, {"containers": [asdict(e) for e in self.entries]})

    def clear(self) -> None:
        """Every container written down runs again (or was never stopped)."""
        self.entries = []
        clear(self.path.parent)


def clear(state_dir: Path) -> None:
    for name in (JOURNAL, JOURNAL + ".prev"):
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()


def read(state_dir: Path) -> list[StoppedContainer]:
    data = read_json(state_dir / JOURNAL)
    entries: list[StoppedContainer] = []
    if not isinstance(data, dict) or not isinstance(data.get("containers"), list):
        return entries
    for item in data["containers"]:
        if not isinstance(item, dict):
            continue
        try:
            entries.append(
                StoppedContainer(
                    id=str(item["id"]),
                    name=str(item["name"]),
                    started_at=str(item["started_at"]),
                    grace_s=max(1, int(item["grace_s"])),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return entries


def finish_interrupted_stops(client: docker.DockerClient, state_dir: Path) -> list[str]:
    """Start again what a killed backup stopped; the caller holds the pass lock.

    Returns a line per container started. Raises ``Unavailable`` when the
    engine cannot be reached; the journal then stays for the next holder.
    """
    entries = read(state_dir)
    if not entries and not (state_dir / JOURNAL).exists():
        return []
    done: list[str] = []
    for entry in entries:
        try:
            container = client.containers.get(entry.id)
            state = container.attrs.get("State") or {}
            if state.get("Running") and state.get("StartedAt") != entry.started_at:
                continue  # started again already: by the backup itself before it died
            event("backup.recover_stop", container=entry.name, running=bool(state.get("Running")))
            # On a container whose stop is still in flight this waits for it to
            # end; on a stopped one it does nothing.
            container.stop(timeout=entry.grace_s)
            container.start()
        except docker.errors.NotFound:
            continue  # removed since (a pass recreates it if it is desired)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise Unavailable(
                f"cannot start {entry.name} again, which a killed backup stopped: {exc}"
            ) from exc
        done.append(f"started {entry.name} again: a backup that was killed had stopped it")
    clear(state_dir)
    return done
