"""The engine as a Swarm manager, for the tests of swarm mode; a second node on demand.

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
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from reconciler import labels
from tests.fixtures.docker_engine import BUSYBOX_IMAGE


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
    _remove_node_network()
    # The manager's address is one a second node, in a network namespace of
    # its own, can reach (a veth pair): 127.0.0.1 would be its own loopback.
    _run("ip", "netns", "add", NODE2_NETNS)
    _run("ip", "link", "add", "veth-rtest1", "type", "veth", "peer", "name", "veth-rtest2")
    _run("ip", "link", "set", "veth-rtest2", "netns", NODE2_NETNS)
    _run("ip", "addr", "add", f"{MANAGER_ADDRESS}/24", "dev", "veth-rtest1")
    _run("ip", "link", "set", "veth-rtest1", "up")
    in_netns = ("ip", "netns", "exec", NODE2_NETNS)
    _run(*in_netns, "ip", "addr", "add", f"{NODE2_ADDRESS}/24", "dev", "veth-rtest2")
    _run(*in_netns, "ip", "link", "set", "veth-rtest2", "up")
    _run(*in_netns, "ip", "link", "set", "lo", "up")
    made = _docker("swarm", "init", "--advertise-addr", MANAGER_ADDRESS)
    try:
        assert made.returncode == 0, made.stderr
        yield client
    finally:
        left = _docker("swarm", "leave", "--force")
        client.close()
        _remove_node_network()
        assert left.returncode == 0, left.stderr


NODE2_NETNS = "reconciler-test-node2"
MANAGER_ADDRESS = "10.199.0.1"
NODE2_ADDRESS = "10.199.0.2"
NODE2_HOSTNAME = "node2"


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"


def _remove_node_network() -> None:
    subprocess.run(["ip", "netns", "del", NODE2_NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", "veth-rtest1"], capture_output=True, check=False)


@dataclass
class SecondNode:
    """A worker: a second dockerd in its own network namespace and host name."""

    socket: str
    node_id: str


@pytest.fixture(scope="module")
def second_node(
    swarm: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecondNode]:
    """A second node joined to the Swarm as a worker, with the local busybox image.

    Its dockerd runs in its own network namespace (nsenter keeps the host's
    /sys, so its cgroups too) and UTS namespace (its host name, for placement).
    """
    root = tmp_path_factory.mktemp("node2")
    socket = f"{root}/docker.sock"
    log = (root / "dockerd.log").open("w")
    daemon = subprocess.Popen(
        [
            "nsenter", f"--net=/var/run/netns/{NODE2_NETNS}", "unshare", "--uts", "sh", "-c",
            f"hostname {NODE2_HOSTNAME} && exec dockerd --data-root {root}/data "
            f"--exec-root {root}/exec -H unix://{socket} --pidfile {root}/dockerd.pid "
            "--bridge none --iptables=false --ip6tables=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    node: SecondNode | None = None
    on_node = ("docker", "-H", f"unix://{socket}")
    try:
        _wait_for_engine(on_node, daemon, root)
        _load_image(BUSYBOX_IMAGE, socket)
        token = swarm.api.inspect_swarm()["JoinTokens"]["Worker"]
        _run(
            *on_node, "swarm", "join", "--token", token, "--advertise-addr", NODE2_ADDRESS,
            f"{MANAGER_ADDRESS}:2377",
        )  # fmt: skip
        node_id = _output(*on_node, "info", "--format", "{{.Swarm.NodeID}}")
        node = SecondNode(socket=socket, node_id=node_id)
        yield node
    finally:
        # The docker CLI, not docker-py: docker-py's unix-socket pool leaves its
        # sockets to the garbage collector, a ResourceWarning inside the test.
        if node is not None:
            subprocess.run(
                [*on_node, "swarm", "leave", "--force"], capture_output=True, check=False
            )
            with contextlib.suppress(docker.errors.APIError):
                swarm.api.remove_node(node.node_id, force=True)
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)
        log.close()
        subprocess.run(["rm", "-rf", str(root / "data")], capture_output=True, check=False)


def _output(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    return done.stdout.strip()


def _wait_for_engine(on_node: tuple[str, ...], daemon: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 60
    while subprocess.run([*on_node, "info"], capture_output=True, check=False).returncode != 0:
        if daemon.poll() is not None:
            raise AssertionError(
                f"the second dockerd exited: {(root / 'dockerd.log').read_text()[-2000:]}"
            )
        assert time.monotonic() < deadline, "the second dockerd did not answer in 60 s"
        time.sleep(0.5)


def _load_image(image: str, socket: str) -> None:
    with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as saved:
        loaded = subprocess.run(
            ["docker", "-H", f"unix://{socket}", "load"],
            stdin=saved.stdout,
            capture_output=True,
            timeout=300,
            check=False,
        )
    assert saved.returncode == 0, f"docker save {image} failed"
    assert loaded.returncode == 0, loaded.stderr


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
