"""SIGKILL of ``reconciler sync`` at a random point of an apply.

Each run commits a change that recreates every service (a new ``VERSION``)
and adds a volume, then kills the sync after a delay drawn uniformly over the
measured length of an unkilled sync. Afterwards no volume and no sentinel in
it is lost, and the next pass (a ``sync``, or every fifth run the daemon)
converges to exactly one running container per service, on the new commit.
"""

from __future__ import annotations

import random
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
from tests.faults.table import CaseResult
from tests.faults.world import World, compose, daemon_converges, web_service
from tests.fixtures.git_remotes import ServedRemote

# 20 runs in one test: beside the suite's other workers it outlasts the default 600 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

RUNS = 20
SERVICES = ("web", "api", "worker")
DAEMON_EVERY = 5  # every fifth run recovers through ``reconciler run`` instead of ``sync``


def desired(version: int) -> str:
    """Every service at ``version``; the worker mounts a volume new in this version."""
    new = f"added{version}"
    services = {
        "web": web_service(version=str(version), volumes={"site": "/data"}),
        "api": web_service(version=str(version), volumes={"site": "/data"}),
        "worker": web_service(version=str(version), volumes={new: "/extra"}),
    }
    return compose(services, ["site", new])


def test_kill_apply(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    fault_case: CaseResult,
    fault_rng: random.Random,
) -> None:
    fault_case.planned = RUNS
    world = World(tmp_path, git_daemon, docker_client, project_name)
    world.commit({"compose.yaml": desired(0)})
    world.sync()
    world.commit({"compose.yaml": desired(1)})
    unkilled = world.timed("sync")
    check_converged(world.cli, world.head())
    fault_case.note(f"an unkilled apply takes {unkilled:.1f}s; kills spread over it")
    sentinels: dict[str, set[str]] = {}
    killed = 0
    for run in range(RUNS):
        version = run + 2
        with fault_case.run(run):
            write_sentinels(docker_client, [world.volume("site")], sentinels)
            head = world.commit({"compose.yaml": desired(version)})
            killed += world.kill_after(fault_rng.uniform(0, unkilled), "sync")
            check_volumes(docker_client, sentinels)
            expected = {"VERSION": str(version)}

            def converged(head: str = head, expected: dict[str, str] = expected) -> None:
                check_converged(world.cli, head)
                check_services(docker_client, project_name, SERVICES, environment=expected)

            if run % DAEMON_EVERY == DAEMON_EVERY - 1:
                daemon_converges(world, converged)
            else:
                sync_converges(world.cli, head)
                converged()
            write_sentinels(docker_client, [world.volume(f"added{version}")], sentinels)
            check_volumes(docker_client, sentinels)
    fault_case.note(f"{killed} of {RUNS} syncs were killed before they finished")
    fault_case.assert_clean()
