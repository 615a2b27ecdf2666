"""The images of images/ build on the local base images and do what they claim.

- images/reconciler: builds from the repository root on the local python base,
  runs ``reconciler --help``, declares ``reconciler healthcheck`` as its health
  check, and that check turns healthy once the daemon's loop runs;
- images/webserver: builds on the local OpenLiteSpeed stand-in, serves PHP with
  mysqli and pdo_mysql on 80 and 443 from the docroot volume, turns healthy.

Image sizes are printed (``-s`` or ``-rA`` shows them), never asserted.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYTHON_BASE = "reconciler-local/python:local"
OLS_BASE = "reconciler-local/openlitespeed:local"
TEST_LABEL = "dev.reconciler.test"


def docker_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def require_image(client: docker.DockerClient, name: str, *, only: str) -> None:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"image {name} is missing: run images/local/build-base-images.sh --only {only}",
            pytrace=False,
        )


def build(tag: str, *args: str) -> None:
    result = docker_cli("build", "-q", "--label", f"{TEST_LABEL}=images", "-t", tag, *args)
    assert result.returncode == 0, f"docker build {tag} failed:\n{result.stderr[-4000:]}"


def report_size(client: docker.DockerClient, tag: str) -> None:
    size = client.images.get(tag).attrs["Size"]
    print(f"\n{tag}: {size / 1e6:.0f} MB")


def fill_wheelhouse() -> None:
    """The host's pip fills images/reconciler/wheels/ (pip in a container may reach no index)."""
    result = subprocess.run(
        ["sh", str(ROOT / "images/reconciler/wheelhouse.sh"), sys.executable],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"wheelhouse.sh failed:\n{result.stderr[-4000:]}"


def wait_health(client: docker.DockerClient, container_id: str, *, timeout_s: float) -> str:
    """Until the container is healthy or unhealthy (or the time is up); return that status."""
    deadline = time.monotonic() + timeout_s
    status = "none"
    while time.monotonic() < deadline:
        attrs = client.api.inspect_container(container_id)
        status = ((attrs["State"].get("Health") or {}).get("Status")) or attrs["State"]["Status"]
        if status in {"healthy", "unhealthy", "exited", "dead"}:
            return str(status)
        time.sleep(1)
    return str(status)


@pytest.fixture(scope="module")
def reconciler_image(docker_client: docker.DockerClient) -> Iterator[str]:
    require_image(docker_client, PYTHON_BASE, only="python")
    fill_wheelhouse()
    tag = f"reconciler-test-{secrets.token_hex(4)}:latest"
    build(
        tag,
        "--build-arg",
        f"BASE={PYTHON_BASE}",
        "-f",
        str(ROOT / "images/reconciler/Dockerfile"),
        str(ROOT),
    )
    report_size(docker_client, tag)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def webserver_image(docker_client: docker.DockerClient) -> Iterator[str]:
    require_image(docker_client, OLS_BASE, only="openlitespeed")
    tag = f"webserver-test-{secrets.token_hex(4)}:latest"
    build(tag, "--build-arg", f"BASE={OLS_BASE}", str(ROOT / "images/webserver"))
    report_size(docker_client, tag)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture
def run_detached(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Ids of containers a test starts; removed with their anonymous volumes afterwards."""
    started: list[str] = []
    yield started
    for container_id in started:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(container_id, force=True, v=True)


def test_reconciler_image_carries_restic(reconciler_image: str) -> None:
    # The backup engine, also run from this image in the helpers that read volumes.
    result = docker_cli("run", "--rm", "--entrypoint", "restic", reconciler_image, "version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("restic 0.")


def test_reconciler_image_runs_the_cli(reconciler_image: str) -> None:
    result = docker_cli("run", "--rm", reconciler_image, "--help")

    assert result.returncode == 0, result.stderr
    for command in ("validate", "plan", "sync", "run", "status", "healthcheck"):
        assert command in result.stdout


def test_reconciler_image_has_git_ssh_gpg_and_no_build_tools(reconciler_image: str) -> None:
    # ssh-keygen and gpg verify signed commits (RECONCILER_VERIFY=ssh|gpg).
    script = (
        "git --version && ssh -V 2>&1 && command -v ssh-keygen && gpg --version && "
        "! test -e /opt/reconciler/bin/pip && ! command -v gcc && ! command -v cc"
    )
    result = docker_cli("run", "--rm", "--entrypoint", "sh", reconciler_image, "-c", script)

    assert result.returncode == 0, result.stdout + result.stderr


def test_reconciler_image_declares_its_contract(
    docker_client: docker.DockerClient, reconciler_image: str
) -> None:
    config = docker_client.images.get(reconciler_image).attrs["Config"]

    assert config["Healthcheck"]["Test"] == ["CMD", "reconciler", "healthcheck"]
    assert config["Entrypoint"] == ["reconciler"]
    assert config["Cmd"] == ["run"]
    assert "/var/lib/reconciler" in (config.get("Volumes") or {})
    # A real variable would win over the env file, where install.sh records the state dir.
    assert not any(v.startswith("RECONCILER_STATE_DIR=") for v in config.get("Env") or [])


def test_reconciler_health_check_passes_once_the_loop_runs(
    docker_client: docker.DockerClient, reconciler_image: str, run_detached: list[str]
) -> None:
    # Unhealthy before any loop: no heartbeat yet.
    before = docker_cli("run", "--rm", reconciler_image, "healthcheck")
    assert before.returncode == 1, before.stdout + before.stderr

    # The loop beats even while its repository cannot be reached (it backs
    # off), so no git remote or Docker socket is needed to see it alive.
    result = docker_cli(
        "run",
        "-d",
        "--label",
        f"{TEST_LABEL}=images",
        "--health-interval",
        "2s",
        "--health-start-period",
        "0s",
        "-e",
        "RECONCILER_REPO=/nonexistent/repository.git",
        "-e",
        "RECONCILER_INTERVAL=5",
        reconciler_image,
    )
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    run_detached.append(container_id)

    status = wait_health(docker_client, container_id, timeout_s=60)

    logs = docker_client.api.logs(container_id, tail=20).decode(errors="replace")
    assert status == "healthy", f"status {status}; logs:\n{logs}"
    first_event = json.loads(logs.splitlines()[0])
    assert first_event["event"] == "daemon.start"


def test_webserver_serves_php_with_mysql_extensions_on_80_and_443(
    docker_client: docker.DockerClient, webserver_image: str, run_detached: list[str]
) -> None:
    result = docker_cli(
        "run",
        "-d",
        "--label",
        f"{TEST_LABEL}=images",
        "--health-interval",
        "2s",
        webserver_image,
    )
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    run_detached.append(container_id)

    status = wait_health(docker_client, container_id, timeout_s=60)
    assert status == "healthy"

    def page(url: str) -> str:
        run = docker_client.api.exec_create(container_id, ["curl", "-sk", url])
        return docker_client.api.exec_start(run["Id"]).decode()

    for url in ("http://127.0.0.1/", "https://127.0.0.1/"):
        assert "mysqli yes; pdo_mysql yes" in page(url)
    # The docroot is where the site volume is mounted; PHP runs from it.
    write = docker_client.api.exec_create(
        container_id,
        ["sh", "-c", "echo '<?php echo 6*7;' > /var/www/vhosts/localhost/html/t.php"],
    )
    docker_client.api.exec_start(write["Id"])
    assert page("http://127.0.0.1/t.php") == "42"


def test_webserver_declares_ports_and_health_check(
    docker_client: docker.DockerClient, webserver_image: str
) -> None:
    config = docker_client.images.get(webserver_image).attrs["Config"]

    assert {"80/tcp", "443/tcp"} <= set(config["ExposedPorts"])
    # Helpers of this image must not each get an anonymous volume to leave behind.
    assert not config.get("Volumes")
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "curl"]


def test_a_new_site_volume_starts_with_the_placeholder_page(
    docker_client: docker.DockerClient, webserver_image: str
) -> None:
    volume = docker_client.volumes.create(
        f"webserver-test-{secrets.token_hex(4)}", labels={TEST_LABEL: "images"}
    )
    try:
        result = docker_cli(
            "run",
            "--rm",
            "--label",
            f"{TEST_LABEL}=images",
            "-v",
            f"{volume.name}:/var/www/vhosts/localhost/html",
            "--entrypoint",
            "ls",
            webserver_image,
            "/var/www/vhosts/localhost/html",
        )
    finally:
        volume.remove(force=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["index.php"]
