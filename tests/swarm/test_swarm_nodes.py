"""Two nodes on one machine (a second dockerd in its own network namespace, joined as a
worker): placement puts tasks where compose.yaml says, and a replica moves to the other
node when its node is drained, with nothing for the reconciler to repair."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler import labels
from tests.e2e.conftest import make_cli
from tests.fixtures.docker_engine import BUSYBOX_IMAGE
from tests.fixtures.git_remotes import GitWorkRepo
from tests.swarm.conftest import NODE2_HOSTNAME, SecondNode

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

IDLE = "trap 'exit 0' TERM; sleep 100000 & wait"


def nodes_of(client: docker.DockerClient, project: str, service: str) -> list[str]:
    """The node ids the service's running tasks are on."""
    (found,) = client.api.services(filters={"name": f"{project}_{service}"})
    tasks = client.api.tasks(filters={"service": found["ID"], "desired-state": "running"})
    return sorted(t["NodeID"] for t in tasks if t["Status"]["State"] == "running")


def wait_for(check: Any, *, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the Swarm did not get there in time"
        time.sleep(1)


def test_placement_and_a_replica_moving_between_two_nodes(
    tmp_path: Path,
    git_workrepo: GitWorkRepo,
    swarm: docker.DockerClient,
    second_node: SecondNode,
    swarm_project: str,
) -> None:
    project = swarm_project
    manager = str(swarm.info()["Swarm"]["NodeID"])
    compose = {
        "services": {
            # One replica per node.
            "web": {
                "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", IDLE],
                "deploy": {"replicas": 2, "placement": {"max_replicas_per_node": 1}},
            },
            # Pinned to the second node by its host name.
            "pinned": {
                "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", IDLE],
                "deploy": {"placement": {"constraints": [f"node.hostname == {NODE2_HOSTNAME}"]}},
            },
        }
    }
    git_workrepo.commit_files(
        {"desired-state/compose.yaml": yaml.safe_dump(compose, sort_keys=False)},
        message="two services on two nodes",
    )
    cli = make_cli(tmp_path, repo_url=str(git_workrepo.remote), project=project)
    deployed = cli.run("sync", timeout=600)
    assert deployed.returncode == 0, deployed.stderr[-3000:]

    assert nodes_of(swarm, project, "web") == sorted([manager, second_node.node_id])
    assert nodes_of(swarm, project, "pinned") == [second_node.node_id]

    # The second node is drained: its tasks stop. Web's replica there is
    # rescheduled, but one per node leaves it waiting; pinned has nowhere to go.
    node = swarm.api.inspect_node(second_node.node_id)
    spec = {**node["Spec"], "Availability": "drain"}
    swarm.api.update_node(second_node.node_id, node["Version"]["Index"], spec)
    wait_for(lambda: nodes_of(swarm, project, "web") == [manager])
    assert nodes_of(swarm, project, "pinned") == []

    # Back to active: Swarm does not rebalance running tasks, but web's waiting
    # replica and pinned's task start on the second node again.
    node = swarm.api.inspect_node(second_node.node_id)
    spec = {**node["Spec"], "Availability": "active"}
    swarm.api.update_node(second_node.node_id, node["Version"]["Index"], spec)
    wait_for(lambda: nodes_of(swarm, project, "web") == sorted([manager, second_node.node_id]))
    wait_for(lambda: nodes_of(swarm, project, "pinned") == [second_node.node_id])

    # A task moving between nodes is not a change of the desired state.
    planned = cli.run("plan")
    assert planned.returncode == 0, planned.stderr
    assert "nothing to do" in planned.stdout, planned.stdout
    services = swarm.api.services(filters={"label": f"{labels.PROJECT}={project}"})
    assert {s["Spec"]["Labels"][labels.SERVICE] for s in services} == {"web", "pinned"}


def test_a_backup_refuses_a_volume_whose_service_runs_on_another_node(
    tmp_path: Path,
    git_workrepo: GitWorkRepo,
    swarm: docker.DockerClient,
    second_node: SecondNode,
    swarm_project: str,
) -> None:
    """Backups read volumes on the manager. The service's data is on the node it is
    pinned to; the manager's volume of the same name (the pass makes one there) is
    empty, and backing it up would report a good backup of nothing."""
    project = swarm_project
    compose = {
        "services": {
            "pinned": {
                "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", IDLE],
                "volumes": ["data:/data"],
                "deploy": {"placement": {"constraints": [f"node.hostname == {NODE2_HOSTNAME}"]}},
            },
        },
        "volumes": {"data": {}},
    }
    backup = {
        "target": f"file://{tmp_path / 'backups'}",
        "volumes": [{"name": "data", "stop_services": True}],
    }
    git_workrepo.commit_files(
        {
            "desired-state/compose.yaml": yaml.safe_dump(compose, sort_keys=False),
            "desired-state/backup.yaml": yaml.safe_dump(backup, sort_keys=False),
        },
        message="a volume on the second node",
    )
    cli = make_cli(tmp_path, repo_url=str(git_workrepo.remote), project=project)
    deployed = cli.run("sync", timeout=600)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    wait_for(lambda: nodes_of(swarm, project, "pinned") == [second_node.node_id])

    backed_up = cli.run("backup", "run", timeout=600)
    assert backed_up.returncode != 0, backed_up.stdout
    assert (
        f"volume data: its data is on node {NODE2_HOSTNAME}, where service pinned runs"
        in backed_up.stderr
    ), backed_up.stderr[-3000:]
    assert f"node.hostname == {swarm.info()['Name']}" in backed_up.stderr
    assert "nothing was stopped or read" in backed_up.stderr
    # Nothing was stopped: the service kept its replica on the second node.
    service = swarm.api.inspect_service(f"{project}_pinned")
    assert service["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    assert nodes_of(swarm, project, "pinned") == [second_node.node_id]
    # Recorded as a failed backup, never as a good one.
    status = cli.run("status", "--json")
    last = json.loads(status.stdout)["backup"]["last"]
    assert last["result"] == "failed", last
    assert "its data is on node" in last["error"]


def test_the_reconciler_on_a_worker_deploys_nothing_and_says_where_to_run(
    tmp_path: Path,
    git_workrepo: GitWorkRepo,
    second_node: SecondNode,
    swarm_project: str,
) -> None:
    """A plain stack on a worker would run beside the Swarm's tasks, unseen by it."""
    compose = {"services": {"web": {"image": BUSYBOX_IMAGE, "command": ["sh", "-c", IDLE]}}}
    git_workrepo.commit_files(
        {"desired-state/compose.yaml": yaml.safe_dump(compose, sort_keys=False)},
        message="one service",
    )
    cli = make_cli(
        tmp_path,
        repo_url=str(git_workrepo.remote),
        project=swarm_project,
        extra={"DOCKER_HOST": f"unix://{second_node.socket}"},
    )
    refused = cli.run("sync", timeout=300)
    assert refused.returncode != 0, refused.stdout
    assert "a member of a Swarm but not a manager" in refused.stderr, refused.stderr[-2000:]
    worker = docker.DockerClient(base_url=f"unix://{second_node.socket}")
    try:
        assert worker.containers.list(all=True, filters={"label": labels.PROJECT}) == []
    finally:
        worker.close()
