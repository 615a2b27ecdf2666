"""The engine as a one-node Swarm manager, for the tests of swarm mode.

``docker swarm init`` changes the engine every other test uses (the reconciler
would deploy their stacks as Swarm services), so these tests run in their own
phase, last (tests/run.sh ``--engine-phase=swarm``), and the engine leaves the
Swarm again when they end, failed or not.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from reconciler import labels


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="session")
def swarm(request: pytest.FixtureRequest) -> Iterator[docker.DockerClient]:
    phase = request.config.getoption("--engine-phase")
    if phase not in ("swarm", "all"):
        pytest.fail(
            f"a swarm-mode test ran in the {phase!r} phase, beside tests that need a plain "
            "engine: mark it with @pytest.mark.swarm",
            pytrace=False,
        )
    client = docker.from_env()
    state = client.info().get("Swarm", {}).get("LocalNodeState")
    if state != "inactive":
        _docker("swarm", "leave", "--force")  # a run killed before it could leave
    made = _docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    assert made.returncode == 0, made.stderr
    try:
        yield client
    finally:
        left = _docker("swarm", "leave", "--force")
        client.close()
        assert left.returncode == 0, left.stderr


@pytest.fixture
def swarm_project(swarm: docker.DockerClient, project_name: str) -> Iterator[str]:
    """A project name whose Swarm services, configs and secrets go at the end."""
    yield project_name
    api = swarm.api
    selector = {"label": f"{labels.PROJECT}={project_name}"}
    for service in api.services(filters=selector):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_service(service["ID"])
    # Task containers go a moment after their service; objects in use cannot go before.
    for _ in range(120):
        tasks = api.containers(all=True, filters={"label": "com.docker.swarm.service.name"})
        if not any(
            c["Labels"]["com.docker.swarm.service.name"].startswith(f"{project_name}_")
            for c in tasks
        ):
            break
        time.sleep(0.5)
    for kind in ("config", "secret"):
        listed = (
            api.configs(filters=selector) if kind == "config" else api.secrets(filters=selector)
        )
        for found in listed:
            with contextlib.suppress(docker.errors.APIError):
                (api.remove_config if kind == "config" else api.remove_secret)(found["ID"])
