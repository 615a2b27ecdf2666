"""The state folder full (a small tmpfs as RECONCILER_STATE_DIR) and corrupt state files.

A light stack (busybox web, a site volume backed up to moto's S3, no
database) keeps these runs short. In every run: nothing is lost, no restore
request runs twice (counted from the ``restore.start`` events of every
command), a backup listed as complete verifies, and once the fault is gone the
next sync converges without any manual step.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.faults.backup_world import restore_yaml
from tests.faults.invariants import (
    check_backups,
    check_restores_once,
    check_services,
    check_volumes,
    sync_converges,
    write_sentinels,
)
from tests.faults.table import new_case
from tests.faults.world import World, compose, web_service
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import S3Server

pytestmark = pytest.mark.integration

RUNS = 2  # per fault; 2, not 3: the suite stays under 30 min on a new machine (issue 15)
CORRUPTIONS = ("garbage", "truncated", "empty")
STATE_FILES = ("status.json", "restores.json", "backup-status.json")
TMPFS_SIZE = "8m"
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


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path, leave: int) -> Path:
    """Fill the file system of ``path`` but ``leave`` bytes; the filler file to remove."""
    filler = path / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    with filler.open("r+b") as out:
        size = out.seek(0, 2)
        out.truncate(max(0, size - leave))
    return filler


def test_state_folder_full(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_env: S3Server,
    s3_bucket: str,
    fault_rng: random.Random,
) -> None:
    case = new_case("state_folder_full", RUNS)
    # The state folder here is an 8 MB tmpfs: too small, by design of the case,
    # for the verified copy a restore spools (its artifacts plus 64 MB of
    # headroom). A VM with a small state disk points the spool elsewhere the same way.
    world = World(
        tmp_path,
        git_daemon,
        docker_client,
        project_name,
        bucket=s3_bucket,
        s3_endpoint=s3_env.url,
        extra={"RECONCILER_SPOOL_DIR": str(tmp_path / "spool")},
    )
    verified: set[str] = set()
    with tmpfs(world.state_dir):
        light = light_world(world)
        for run in range(RUNS):
            with case.run(run):
                write_sentinels(docker_client, [world.volume("site")], light.sentinels)
                head = light.change(request=f"full{run}")
                # Anywhere from nothing to a few status files' worth left.
                filler = fill(world.state_dir, fault_rng.randint(0, 16 * 1024))
                try:
                    failed = light.run("sync")
                    backup = light.run("backup", "run")
                    status = world.cli.run("status", "--json")
                    assert status.returncode == 0, f"status with a full disk: {status.stderr}"
                finally:
                    filler.unlink()
                case.note(f"run {run}: sync exited {failed.returncode}, backup {backup.returncode}")
                light.check(head, verified)
                assert light.run("backup", "run").returncode == 0
                check_backups(world.cli, verified)
    case.assert_clean()


def corrupt(path: Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes() if path.exists() else b"{}"
    if how == "garbage":
        path.write_bytes(rng.randbytes(rng.randint(1, 200)))
    elif how == "truncated":
        path.write_bytes(data[: rng.randint(1, max(1, len(data) - 1))])
    else:
        path.write_bytes(b"")


def refused_until_repaired(light: Light, world: World, good: bytes, *, request: str) -> None:
    """A corrupt restore ledger is never replaced by its .prev (where a finished request
    may still be pending): the sync fails naming it, no request runs, and once it is
    repaired by hand (here: its good bytes put back) everything goes on."""
    path = world.state_dir / "restores.json"
    for _ in range(2):  # and again: it stays refused, it is not quietly reset
        result = light.run("sync")
        assert result.returncode == 1, f"sync with a corrupt ledger exited {result.returncode}"
        assert f"the restore ledger {path} is corrupt" in result.stdout + result.stderr
        assert request not in light.starts, "a request ran with a corrupt ledger"
    path.write_bytes(good)


def test_corrupt_state_files(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_env: S3Server,
    s3_bucket: str,
    fault_rng: random.Random,
) -> None:
    world = World(
        tmp_path, git_daemon, docker_client, project_name, bucket=s3_bucket, s3_endpoint=s3_env.url
    )
    verified: set[str] = set()
    light = light_world(world)
    cases = []
    for name in STATE_FILES:
        case = new_case(f"corrupt_{name}", RUNS)
        cases.append(case)
        for run, how in enumerate(CORRUPTIONS[:RUNS]):
            with case.run(run):
                write_sentinels(docker_client, [world.volume("site")], light.sentinels)
                head = light.change(request=f"{name}-{how}")
                # Another pass first, so that NAME.prev is a good copy to fall back on.
                assert light.run("backup", "run").returncode == 0
                good = (world.state_dir / name).read_bytes()
                corrupt(world.state_dir / name, how, fault_rng)
                status = world.cli.run("status", "--json")
                assert status.returncode == 0, f"status with {name} {how}: {status.stderr}"
                if name == "restores.json":
                    refused_until_repaired(light, world, good, request=f"{name}-{how}")
                light.check(head, verified)
                assert light.run("backup", "run").returncode == 0
                last = world.cli.status()["backup"]["last"]
                assert last["result"] == "ok", last
    for case in cases:
        case.assert_clean()
