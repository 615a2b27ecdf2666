"""S3 answering 5xx, dropping connections mid-body, or answering slowly, during a backup
and during a restore (the fault proxy of tests/fixtures/s3_server.py between the CLI and moto).

Each fault is drawn with a random count of affected requests, so some runs
outlast the client's retries and some do not. Either way: a backup listed as
complete verifies, the services the backup stopped run again, no helper is
left, a failed restore overwrote nothing (or left a safety copy that
verifies), and once the fault is gone the next backup or sync succeeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.faults import backup_world
from tests.faults.backup_world import restore_yaml, rows, volume_files
from tests.faults.invariants import (
    check_backups,
    check_no_helpers,
    check_restores_once,
    check_services,
    check_volumes,
    sync_converges,
    write_sentinels,
)
from tests.faults.table import new_case
from tests.faults.world import World
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import Fault, FaultProxy
from tests.integration.backup_stack import run_sql

pytestmark = pytest.mark.integration

# Per fault kind and operation; 2, not 3: the suite stays under 30 min on a new machine.
RUNS = 2


def faults(rng: random.Random) -> dict[str, Callable[[], Fault]]:
    return {
        "5xx": lambda: Fault(
            kind="status", status=rng.choice([500, 503]), times=rng.randint(1, 12)
        ),
        "dropped": lambda: Fault(
            kind="drop", after_bytes=rng.randint(0, 4096), times=rng.randint(1, 8)
        ),
        "slow": lambda: Fault(kind="delay", delay_s=rng.uniform(0.5, 2.5), times=rng.randint(1, 4)),
    }


@pytest.fixture
def world(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_bucket: str,
    fault_proxy: FaultProxy,
) -> World:
    world = World(
        tmp_path,
        git_daemon,
        docker_client,
        project_name,
        bucket=s3_bucket,
        s3_endpoint=fault_proxy.url,
    )
    backup_world.start(world)
    return world


def test_s3_faults_during_backup(
    world: World, fault_proxy: FaultProxy, fault_rng: random.Random
) -> None:
    client, site = world.client, world.volume("site")
    verified: set[str] = set()
    sentinels: dict[str, set[str]] = {}
    cases = []
    for kind, make in faults(fault_rng).items():
        case = new_case(f"s3_{kind}_during_backup", RUNS)
        cases.append(case)
        outcomes: dict[str, int] = {}
        for run in range(RUNS):
            with case.run(run):
                write_sentinels(client, [site], sentinels)
                fault_proxy.set(make())
                result = world.cli.run("backup", "run", timeout=600)
                outcome = "ok" if result.returncode == 0 else "failed"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                fault_proxy.set(Fault())
                # The backup's own way out restarts what it stopped: no sync here.
                check_services(client, world.project, backup_world.SERVICES)
                check_no_helpers(client, world.project)
                check_volumes(client, sentinels)
                check_backups(world.cli, verified)
                before = len(verified)
                again = world.cli.run("backup", "run", timeout=300)
                assert again.returncode == 0, f"backup after the fault: {again.stderr[-2000:]}"
                check_backups(world.cli, verified)
                assert len(verified) > before
        case.note(f"backups under the fault: {outcomes}")
    for case in cases:
        case.assert_clean()


def test_s3_faults_during_restore(
    world: World, fault_proxy: FaultProxy, fault_rng: random.Random
) -> None:
    client, site = world.client, world.volume("site")
    result = world.cli.run("backup", "run", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    in_backup = volume_files(client, site)
    backup_rows = rows(world)
    requests: list[dict[str, Any]] = []
    cases = []
    for kind, make in faults(fault_rng).items():
        case = new_case(f"s3_{kind}_during_restore", RUNS)
        cases.append(case)
        states: dict[str, int] = {}
        for run in range(RUNS):
            ident = f"{kind}{run}"
            with case.run(run):
                sentinels: dict[str, set[str]] = {}
                write_sentinels(client, [site], sentinels)
                run_sql(
                    backup_world.db_container(world), "INSERT INTO shop.orders (item) VALUES ('x');"
                )
                rows_before = rows(world)
                requests.append({"id": ident, "backup": "latest"})
                head = world.commit({"restore.yaml": restore_yaml(requests)})
                fault_proxy.set(make())
                world.cli.run("sync", timeout=600)
                fault_proxy.set(Fault())
                check_services(client, world.project, backup_world.SERVICES)
                check_no_helpers(client, world.project)
                record = check_restores_once(world.cli, world.state_dir)[ident]
                states[record["state"]] = states.get(record["state"], 0) + 1
                if record["state"] == "succeeded":
                    assert volume_files(client, site) == in_backup
                    assert rows(world) == backup_rows
                elif record["state"] == "failed" and not record.get("safety_copy_backup"):
                    check_volumes(client, sentinels)
                    assert rows(world) == rows_before
                elif record["state"] == "failed":
                    copy, safety = record["safety_copy_backup"], record["safety_copy"]
                    check = world.cli.run("backup", "verify", copy, "--target", safety)
                    assert check.returncode == 0, f"safety copy: {check.stderr[-2000:]}"
                else:
                    raise AssertionError(f"restore {ident} ended {record['state']}: {record}")
                # The fault is gone: the next pass converges and runs nothing again.
                sync_converges(world.cli, head)
                assert check_restores_once(world.cli, world.state_dir)[ident] == record
        case.note(f"restore states under the fault: {states}")
    for case in cases:
        case.assert_clean()
