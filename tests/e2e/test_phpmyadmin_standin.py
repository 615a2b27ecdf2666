"""The admin profile deploys with the local phpMyAdmin stand-in and serves its login page.

The phpmyadmin service as desired-state/compose.yaml declares it (profile
``admin``, PMA_HOST, port 80 published on 127.0.0.1), with
``PHPMYADMIN_IMAGE=reconciler-local/phpmyadmin:local`` and ``COMPOSE_PROFILES=admin``.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from tests.e2e.conftest import make_cli
from tests.fixtures.git_remotes import ServedRemote

pytestmark = pytest.mark.integration

STAND_IN = "reconciler-local/phpmyadmin:local"

COMPOSE = """\
name: {project}
services:
  db:
    image: reconciler-local/mariadb:local
    environment:
      MARIADB_ROOT_PASSWORD: rootpw
  phpmyadmin:
    image: ${{PHPMYADMIN_IMAGE:-phpmyadmin:5.2}}
    profiles: [admin]
    ports:
      - "127.0.0.1:{port}:80"
    environment:
      PMA_HOST: db
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_admin_profile_serves_the_phpmyadmin_login_page(
    tmp_path: Path, git_daemon: ServedRemote, docker_client: docker.DockerClient, project_name: str
) -> None:
    for image, only in ((STAND_IN, "phpmyadmin"), ("reconciler-local/mariadb:local", "mariadb")):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(
                f"{image} is missing: run images/local/build-base-images.sh --only {only}",
                pytrace=False,
            )
    port = free_port()
    cli = make_cli(
        tmp_path,
        repo_url=git_daemon.url,
        project=project_name,
        extra={"COMPOSE_PROFILES": "admin", "PHPMYADMIN_IMAGE": STAND_IN},
    )
    git_daemon.commit_files(
        {"desired-state/compose.yaml": COMPOSE.format(project=project_name, port=port)}
    )

    cli.run("sync", check=True)

    container = docker_client.containers.get(f"{project_name}-phpmyadmin-1")
    assert container.attrs["Config"]["Image"] == STAND_IN
    page = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            page = requests.get(f"http://127.0.0.1:{port}/", timeout=5).text
            break
        except requests.ConnectionError:
            time.sleep(1)
    assert "<title>phpMyAdmin" in page
    assert 'id="login_form"' in page
    assert 'name="pma_username"' in page
    # PMA_HOST names the server phpMyAdmin logs in to, as with the official image.
    script = (
        "include '/etc/phpmyadmin/config.inc.php'; "
        "echo $cfg['Servers'][1]['host'], ':', $cfg['Servers'][1]['port'];"
    )
    configured = container.exec_run(["php", "-r", script])
    assert configured.output.decode().strip().endswith("db:3306")
