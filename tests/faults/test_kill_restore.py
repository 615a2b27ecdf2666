"""SIGKILL of ``reconciler sync`` at a random point of a restore.yaml request.

Each run commits a new request id (the earlier ids stay in restore.yaml) that
restores the site volume and the database from one good backup, and kills the
sync after a delay drawn over the measured length of an unkilled one. Then:

- the next sync converges, every service runs, no helper is left;
- each id shows once, and is ``succeeded`` (the volume and the rows are the
  backup's) or ``interrupted``: with no safety copy nothing was overwritten
  (every sentinel and row is still there); with one, that copy verifies and
  holds every sentinel written before the restore;
- data written after the recovery survives another sync: no request runs twice.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.faults import backup_world
from tests.faults.backup_world import copy_names, restore_yaml, rows, volume_files
from tests.faults.invariants import (
    SENTINEL_PREFIX,
    check_no_helpers,
    check_restores_once,
    check_services,
    check_volumes,
    sync_converges,
    write_sentinels,
)
from tests.faults.table import CaseResult
from tests.faults.world import World
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import S3Server
from tests.integration.backup_stack import run_sql

# 20 runs in one test: beside the suite's other workers it outlasts the default 600 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

RUNS = 20


def test_kill_restore(
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
    site = world.volume("site")
    sentinels: dict[str, set[str]] = {}
    write_sentinels(docker_client, [site], sentinels)
    result = world.cli.run("backup", "run", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    in_backup = volume_files(docker_client, site)
    backup_rows = rows(world)
    requests: list[dict[str, Any]] = []

    def request(ident: str) -> str:
        requests.append({"id": ident, "backup": "latest"})
        return world.commit({"restore.yaml": restore_yaml(requests)})

    request("measure")
    unkilled = world.timed("sync")
    assert check_restores_once(world.cli, world.state_dir)["measure"]["state"] == "succeeded"
    fault_case.note(f"an unkilled restore takes {unkilled:.1f}s; kills spread over it")
    states: dict[str, int] = {}
    for run in range(RUNS):
        ident = f"kill{run}"
        with fault_case.run(run):
            # What is there before the restore: sentinels beyond the backup, one more row.
            sentinels = {site: {n for n in volume_files(docker_client, site) if n in in_backup}}
            write_sentinels(docker_client, [site], sentinels)
            before = volume_files(docker_client, site)
            run_sql(
                backup_world.db_container(world), "INSERT INTO shop.orders (item) VALUES ('x');"
            )
            rows_before = rows(world)
            head = request(ident)
            world.kill_after(fault_rng.uniform(0, unkilled), "sync")
            sync_converges(world.cli, head)
            check_services(docker_client, project_name, backup_world.SERVICES)
            check_no_helpers(docker_client, project_name)
            record = check_restores_once(world.cli, world.state_dir)[ident]
            states[record["state"]] = states.get(record["state"], 0) + 1
            if record["state"] == "succeeded":
                assert volume_files(docker_client, site) == in_backup
                assert rows(world) == backup_rows
            elif record["state"] == "interrupted" and not record.get("safety_copy_backup"):
                # "no safety copy was complete, so nothing had been overwritten"
                check_volumes(docker_client, sentinels)
                assert rows(world) == rows_before
            elif record["state"] == "interrupted":
                safety = record["safety_copy"]
                copy = record["safety_copy_backup"]
                verified = world.cli.run("backup", "verify", copy, "--target", safety)
                assert verified.returncode == 0, f"safety copy {copy}: {verified.stderr[-2000:]}"
                kept = copy_names(world, safety, copy)
                assert before <= kept, f"the safety copy lacks {sorted(before - kept)}"
            else:
                raise AssertionError(f"restore {ident} ended {record['state']}: {record}")
            # Nothing runs it again: what is written now survives the next pass.
            after: dict[str, set[str]] = {}
            write_sentinels(docker_client, [site], after)
            shown = check_restores_once(world.cli, world.state_dir)[ident]
            sync_converges(world.cli, head)
            check_volumes(docker_client, after)
            assert check_restores_once(world.cli, world.state_dir)[ident] == shown
    fault_case.note(f"restore states after a kill: {states}")
    assert all(n.startswith((SENTINEL_PREFIX, "file")) for n in in_backup)
    fault_case.assert_clean()
