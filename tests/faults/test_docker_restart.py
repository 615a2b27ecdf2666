"""The Docker daemon restarted in the middle of an apply.

dockerd is stopped (SIGTERM: the engine stops every container, as a
``systemctl restart docker`` or a package upgrade does) at a random point of
a sync that recreates every service, and started again exactly like
tests/run.sh starts it. moto's S3 server is a process, not a container, so it
survives. After each run the engine is back (a finally: even a failed run
leaves it answering), the volumes and their sentinels are intact, and the
reconciler alone (the next sync; in the last run the daemon) brings every
service back, once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import docker
import pytest

from tests.faults.invariants import (
    check_converged,
    check_services,
    check_volumes,
    sync_converges,
    write_sentinels,
)
from tests.faults.table import new_case
from tests.faults.world import World, compose, daemon_converges, web_service
from tests.fixtures.git_remotes import ServedRemote

pytestmark = [pytest.mark.integration, pytest.mark.restarts_engine]

RUNS = 2  # 2, not 3: the suite stays under 30 min on a new machine (issue 15)
SERVICES = ("web", "api")
ENGINE_WAIT_S = 90


def desired(version: int) -> str:
    return compose(
        {name: web_service(version=str(version), volumes={"site": "/data"}) for name in SERVICES},
        ["site"],
    )


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def restart_engine() -> None:
    """Stop dockerd and start it again as tests/run.sh does; wait until it answers."""
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=False)
    for pid in pids.stdout.split():
        os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + ENGINE_WAIT_S
    while subprocess.run(["pidof", "dockerd"], capture_output=True, check=False).returncode == 0:
        assert time.monotonic() < deadline, "dockerd did not stop"
        time.sleep(0.2)
    ensure_engine()


def ensure_engine() -> None:
    if engine_answers():
        return
    if subprocess.run(["pidof", "dockerd"], capture_output=True, check=False).returncode != 0:
        subprocess.run(["sh", "-c", "nohup dockerd >/var/log/dockerd.log 2>&1 &"], check=True)
    deadline = time.monotonic() + ENGINE_WAIT_S
    while not engine_answers():
        assert time.monotonic() < deadline, "dockerd did not answer; see /var/log/dockerd.log"
        time.sleep(0.5)


def test_docker_daemon_restarted_during_apply(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    fault_rng: random.Random,
) -> None:
    case = new_case("docker_restart_during_apply", RUNS)
    world = World(tmp_path, git_daemon, docker_client, project_name)
    world.commit({"compose.yaml": desired(0)})
    world.sync()
    world.commit({"compose.yaml": desired(1)})
    unkilled = world.timed("sync")
    case.note(f"an unkilled apply takes {unkilled:.1f}s; restarts spread over it")
    sentinels: dict[str, set[str]] = {}
    for run in range(RUNS):
        version = run + 2
        with case.run(run):
            write_sentinels(docker_client, [world.volume("site")], sentinels)
            head = world.commit({"compose.yaml": desired(version)})
            sync = world.start("sync", log="during-restart.log")
            try:
                time.sleep(fault_rng.uniform(0, unkilled))
                restart_engine()
            finally:
                ensure_engine()
                sync.wait(timeout=300)
            check_volumes(docker_client, sentinels)
            expected = {"VERSION": str(version)}
            if run == RUNS - 1:

                def converged(head: str = head, expected: dict[str, str] = expected) -> None:
                    check_converged(world.cli, head)
                    check_services(docker_client, project_name, SERVICES, environment=expected)

                daemon_converges(world, converged)
            else:
                sync_converges(world.cli, head)
                check_services(docker_client, project_name, SERVICES, environment=expected)
            check_volumes(docker_client, sentinels)
    case.assert_clean()
