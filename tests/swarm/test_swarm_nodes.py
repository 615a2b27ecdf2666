"""Two nodes on one machine (a second dockerd in its own network namespace, joined as a
worker): placement puts tasks where compose.yaml says, and a replica moves to the other
node when its node is drained, with nothing for the reconciler to repair."""

from __future__ import annotations

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
