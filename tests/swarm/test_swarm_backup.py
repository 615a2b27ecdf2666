"""Backups and restores in swarm mode, by the real CLI on a one-node Swarm: a service is
stopped by scaling it to 0 and back, dumps come from the database's task container,
and a restore brings a volume and a database back."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler import labels
from reconciler.adapters.swarm_engine import STOPPED_REPLICAS
from tests.e2e.conftest import Cli, make_cli
from tests.e2e.test_docker_api_endpoints import documented_endpoints
from tests.fixtures.docker_engine import BUSYBOX_IMAGE
from tests.fixtures.docker_proxy import RecordingDockerProxy, normalise
from tests.fixtures.git_remotes import GitWorkRepo

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

MARIADB_IMAGE = "reconciler-local/mariadb:local"
ROOT_PASSWORD = "swarm-root-pw"
IDLE = "trap 'exit 0' TERM; sleep 100000 & wait"


def stack(backups: Path) -> dict[str, str]:
    # Local volumes: their data lives on this node, so each service is pinned to it.
    pinned = {"placement": {"constraints": [f"node.hostname == {socket.gethostname()}"]}}
    compose = {
        "services": {
            "web": {
                "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", IDLE],
                "volumes": ["uploads:/data"],
                "deploy": pinned,
            },
            "db": {
                "image": MARIADB_IMAGE,
                "environment": {"MARIADB_ROOT_PASSWORD": ROOT_PASSWORD, "MARIADB_DATABASE": "site"},
                "volumes": ["db:/var/lib/mysql"],
                "healthcheck": {
                    "test": ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"],
                    "interval": "2s",
                    "timeout": "5s",
                    "retries": 30,
                },
                "deploy": pinned,
            },
        },
        "volumes": {"uploads": {}, "db": {}},
    }
    backup = {
        "target": f"file://{backups}",
        "volumes": [{"name": "uploads", "stop_services": True}],
        "databases": [{"service": "db"}],
    }
    return {
        "desired-state/compose.yaml": yaml.safe_dump(compose, sort_keys=False),
        "desired-state/backup.yaml": yaml.safe_dump(backup, sort_keys=False),
    }


def task_of(client: docker.DockerClient, project: str, service: str) -> Any:
    (container,) = client.containers.list(
        filters={"label": f"com.docker.swarm.service.name={project}_{service}"}
    )
    return container


def run_in(container: Any, script: str) -> str:
    code, output = container.exec_run(["sh", "-c", script])
    text = bytes(output).decode(errors="replace")
    assert code == 0, text
    return text


def sql(client: docker.DockerClient, project: str, statement: str) -> str:
    db = task_of(client, project, "db")
    return run_in(db, f'mariadb -uroot -p{ROOT_PASSWORD} -N site -e "{statement}"')


def test_a_backup_scales_services_to_zero_and_back_and_a_restore_brings_the_data_back(
    tmp_path: Path,
    git_workrepo: GitWorkRepo,
    swarm: docker.DockerClient,
    swarm_project: str,
) -> None:
    project = swarm_project
    backups = tmp_path / "backups"
    git_workrepo.commit_files(stack(backups), message="a stack with data")
    # Every Docker API call goes through a recording relay: docs/security.md lists them.
    with RecordingDockerProxy(tmp_path / "docker.sock") as proxy:
        cli = make_cli(
            tmp_path,
            repo_url=str(git_workrepo.remote),
            project=project,
            extra={"DOCKER_HOST": proxy.docker_host},
        )
        back_up_and_restore(cli, swarm, project)
        calls = list(proxy.calls)
    seen = {normalise(method, target) for method, target in calls}
    missing = sorted(seen - set(documented_endpoints()))
    assert not missing, f"Docker API calls missing from the table of docs/security.md: {missing}"


def back_up_and_restore(cli: Cli, swarm: docker.DockerClient, project: str) -> None:
    deployed = cli.run("sync", timeout=600)
    assert deployed.returncode == 0, deployed.stderr[-3000:]

    web = task_of(swarm, project, "web")
    run_in(web, "echo 'kept by the backup' > /data/note.txt")
    sql(
        swarm,
        project,
        "CREATE TABLE entries (text VARCHAR(40)); INSERT INTO entries VALUES ('first');",
    )

    backed_up = cli.run("backup", "run", timeout=600)
    assert backed_up.returncode == 0, backed_up.stderr[-3000:]
    assert "backup.stop_service" in backed_up.stderr
    # Back at its replicas, a new task (the old one went with the scale to 0).
    service = swarm.api.inspect_service(f"{project}_web")
    assert service["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    assert STOPPED_REPLICAS not in service["Spec"]["Labels"]
    after_backup = task_of(swarm, project, "web")
    assert after_backup.id != web.id
    # Nothing for the next pass to repair.
    planned = cli.run("plan")
    assert "nothing to do" in planned.stdout, planned.stdout + planned.stderr

    # The data changes; a restore of the backup brings it back.
    run_in(after_backup, "rm /data/note.txt && echo 'after the backup' > /data/later.txt")
    sql(swarm, project, "DELETE FROM entries; INSERT INTO entries VALUES ('later');")
    restored = cli.run("restore", "latest", "--yes", "--id", "swarm-restore", timeout=600)
    assert restored.returncode == 0, restored.stderr[-3000:]

    web = task_of(swarm, project, "web")
    assert run_in(web, "cat /data/note.txt") == "kept by the backup\n"
    assert run_in(web, "ls /data") == "note.txt\n"
    assert sql(swarm, project, "SELECT text FROM entries;").split() == ["first"]
    service = swarm.api.inspect_service(f"{project}_web")
    assert service["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    assert service["Spec"]["Labels"][labels.PROJECT] == project
