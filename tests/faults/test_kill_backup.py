"""SIGKILL of ``reconciler backup run`` at a random point of a backup.

The site volume is backed up with ``stop_services``, so a kill can land while
web is stopped. A killed backup must never be listed as complete unless it
verifies and must lose nothing from the volumes; the next sync starts what it
stopped, and the next backup succeeds (its lock died with it) and removes the
helper container it left.
"""

from __future__ import annotations

import random
from pathlib import Path

import docker
import pytest

from tests.faults import backup_world
from tests.faults.invariants import (
    check_backups,
    check_no_helpers,
    check_services,
    check_volumes,
    sync_converges,
    write_sentinels,
)
from tests.faults.table import CaseResult
from tests.faults.world import World
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import S3Server

# 20 runs in one test: beside the suite's other workers it outlasts the default 600 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

RUNS = 20


def test_kill_backup(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_env: S3Server,
    s3_bucket: str,
    fault_case: CaseResult,
    fault_rng: random.Random,
) -> None:
    fault_case.planned = RUNS
    world = World(
        tmp_path, git_daemon, docker_client, project_name, bucket=s3_bucket, s3_endpoint=s3_env.url
    )
    backup_world.start(world)
    unkilled = world.timed("backup", "run")
    fault_case.note(f"an unkilled backup takes {unkilled:.1f}s; kills spread over it")
    verified: set[str] = set()
    check_backups(world.cli, verified)
    sentinels: dict[str, set[str]] = {}
    killed = 0
    for run in range(RUNS):
        with fault_case.run(run):
            write_sentinels(docker_client, [world.volume("site")], sentinels)
            killed += world.kill_after(fault_rng.uniform(0, unkilled), "backup", "run")
            check_volumes(docker_client, sentinels)
            check_backups(world.cli, verified)
            sync_converges(world.cli, world.head())
            check_services(docker_client, project_name, backup_world.SERVICES, helpers_allowed=True)
            before = len(verified)
            result = world.cli.run("backup", "run", timeout=300)
            assert result.returncode == 0, f"the next backup failed: {result.stderr[-2000:]}"
            check_no_helpers(docker_client, project_name)
            check_backups(world.cli, verified)
            assert len(verified) > before, "the next backup is not listed as complete"
    fault_case.note(f"{killed} of {RUNS} backups were killed before they finished")
    fault_case.assert_clean()
