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
from dataclasses import asdict
from pathlib import Path

from reconciler.adapters import stack_control
from reconciler.adapters.engine_client import Client
from reconciler.adapters.stack_control import StoppedRun
from reconciler.state import names
from reconciler.state.files import atomic_write_json, read_json

JOURNAL = names.BACKUP_STOPS


class StopJournal:
    """The containers one backup has stopped (or is stopping), kept on disk."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL
        self.entries: list[StoppedRun] = []

    def about_to_stop(self, run: StoppedRun) -> None:
        """Write ``run`` down; called before the engine is asked to stop it."""
        self.entries.append(run)
        atomic_write_json(self.path, {"containers": [asdict(e) for e in self.entries]})

    def clear(self) -> None:
        """Every container written down runs again (or was never stopped)."""
        self.entries = []
        clear(self.path.parent)


def clear(state_dir: Path) -> None:
    for name in (JOURNAL, JOURNAL + ".prev"):
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()


def read(state_dir: Path) -> list[StoppedRun]:
    data = read_json(state_dir / JOURNAL)
    entries: list[StoppedRun] = []
    if not isinstance(data, dict) or not isinstance(data.get("containers"), list):
        return entries
    for item in data["containers"]:
        if not isinstance(item, dict):
            continue
        try:
            entries.append(
                StoppedRun(
                    id=str(item["id"]),
                    name=str(item["name"]),
                    started_at=str(item["started_at"]),
                    grace_s=max(1, int(item["grace_s"])),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return entries


def finish_interrupted_stops(client: Client, state_dir: Path) -> list[str]:
    """Start again what a killed backup stopped; the caller holds the pass lock.

    Returns a line per container started. Raises ``Unavailable`` when the
    engine cannot be reached; the journal then stays for the next holder.
    """
    entries = read(state_dir)
    if not entries and not (state_dir / JOURNAL).exists():
        return []
    done = [
        f"started {entry.name} again: a backup that was killed had stopped it"
        for entry in entries
        if stack_control.restart_stopped_run(client, entry)
    ]
    clear(state_dir)
    return done
