"""The light stack of the state fault cases (test_state_full.py, test_state_corrupt.py).

A busybox web and a site volume backed up to moto's S3, no database, keeps
these runs short. In every run: nothing is lost, no restore request runs twice
(counted from the ``restore.start`` events of every command), a backup listed
as complete verifies, and once the fault is gone the next sync converges
without any manual step.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from typing import Any

from tests.faults.backup_world import restore_yaml
from tests.faults.invariants import (
    check_backups,
    check_restores_once,
    check_services,
    check_volumes,
    sync_converges,
)
from tests.faults.world import World, compose, web_service

BACKUP_YAML = "target: ${BACKUP_TARGET}\nvolumes: [site]\n"


def desired(version: int) -> str:
    return compose({"web": web_service(version=str(version), volumes={"site": "/data"})}, ["site"])


class Light:
    """The light stack and a count of the restore starts seen in every command's output."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.requests: list[dict[str, Any]] = []
        self.starts: dict[str, int] = {}
        self.version = 0
        self.sentinels: dict[str, set[str]] = {}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.world.cli.run(*args, timeout=300)
        for line in (result.stdout + result.stderr).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == "restore.start":
                    self.starts[entry["id"]] = self.starts.get(entry["id"], 0) + 1
        return result

    def change(self, request: str | None = None) -> str:
        """A commit that recreates web and maybe adds a restore request."""
        self.version += 1
        files = {"compose.yaml": desired(self.version)}
        if request:
            self.requests.append({"id": request, "backup": "latest"})
            files["restore.yaml"] = restore_yaml(self.requests)
        return self.world.commit(files)

    def check(self, head: str, verified: set[str]) -> None:
        """The invariants once the fault is gone: the next sync converges."""
        result = self.run("sync")
        assert result.returncode == 0, (
            f"sync after the fault exited {result.returncode}: "
            f"{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )
        sync_converges(self.world.cli, head)
        client, project = self.world.client, self.world.project
        check_services(client, project, ["web"], environment={"VERSION": str(self.version)})
        check_volumes(client, self.sentinels)
        check_restores_once(self.world.cli, self.world.state_dir)
        twice = {ident: n for ident, n in self.starts.items() if n > 1}
        assert not twice, f"restore requests started more than once: {twice}"
        check_backups(self.world.cli, verified)


def light_world(world: World) -> Light:
    light = Light(world)
    world.commit(
        {"compose.yaml": desired(0), "backup.yaml": BACKUP_YAML, "restore.yaml": "restores: []\n"}
    )
    world.sync()
    assert light.run("backup", "run").returncode == 0
    light.change(request="first")
    assert light.run("sync").returncode == 0
    return light
