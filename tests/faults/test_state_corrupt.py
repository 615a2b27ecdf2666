"""Corrupt state files (garbage, truncated, empty), on the light stack of state_world.py."""

from __future__ import annotations

import random
from pathlib import Path

import docker
import pytest

from tests.faults.invariants import write_sentinels
from tests.faults.state_world import Light, light_world
from tests.faults.table import new_case
from tests.faults.world import World
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import S3Server

pytestmark = pytest.mark.integration

RUNS = 2  # per file; 2, not 3: the suite stays under 30 min on a new machine (issue 15)
CORRUPTIONS = ("garbage", "truncated", "empty")
STATE_FILES = ("status.json", "restores.json", "backup-status.json")


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
