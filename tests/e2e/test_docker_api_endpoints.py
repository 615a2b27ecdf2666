"""The Docker API calls the reconciler makes are the ones docs/security.md lists.

The real CLI runs a representative workload with ``DOCKER_HOST`` pointed at a
recording relay in front of the Docker socket: a sync that builds an image,
creates services, networks (one service on two) and volumes; ``backup run`` of a volume and a
MariaDB database; a committed restore (with its safety copy); a sync that
recreates one service and removes another with its networks; ``plan``; the restore drill
(scratch volume and database); ``status``. Every
call, normalised (``POST /containers/{id}/start``), must be in the table of
docs/security.md, so the table a socket proxy is configured from cannot drift
from the code. The table's proxy variable for each call is checked too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from reconciler import labels
from tests.e2e.conftest import make_cli
from tests.fixtures.docker_proxy import RecordingDockerProxy, normalise
from tests.fixtures.git_remotes import ServedRemote
from tests.integration.backup_stack import ROOT_PASSWORD

pytestmark = pytest.mark.integration

SECURITY_DOC = Path(__file__).parents[2] / "docs" / "security.md"

COMPOSE = """\
services:
  web:
    image: reconciler-local/busybox:latest
    command: ["sh", "-c", "echo {greeting} > /data/index.html; exec httpd -f -p 8080 -h /data"]
    volumes: ["site:/data"]
    depends_on:
      db: {{condition: service_healthy}}
    healthcheck:
      test: ["CMD-SHELL", "pidof httpd >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 10
    stop_grace_period: 1s
  db:
    image: reconciler-local/mariadb:local
    environment:
      MARIADB_ROOT_PASSWORD: ${{DB_ROOT_PASSWORD}}
      MARIADB_DATABASE: shop
    volumes: ["dbdata:/var/lib/mysql"]
    healthcheck:
      test: ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"]
      interval: 1s
      timeout: 3s
      retries: 60
    stop_grace_period: 5s
{tool}
volumes:
  site:
  dbdata:
"""
TOOL = """\
  tool:
    build: ../images/tool
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    stop_grace_period: 1s
    networks: [front, back]
networks:
  front:
  back:
"""
DOCKERFILE = "FROM reconciler-local/busybox:latest\nLABEL purpose=least-privilege-test\n"
BACKUP = "target: ${BACKUP_TARGET}\nvolumes: [site]\ndatabases: [db]\n"
RESTORE = "restores:\n  - {id: r1, backup: latest, volumes: [site], databases: [db]}\n"

# tecnativa/docker-socket-proxy: the variable that opens each path prefix.
_PROXY_VARIABLES = {
    "_ping": "PING",
    "version": "VERSION",
    "info": "INFO",
    "events": "EVENTS",
    "containers": "CONTAINERS",
    "images": "IMAGES",
    "build": "BUILD",
    "networks": "NETWORKS",
    "volumes": "VOLUMES",
    "exec": "EXEC",
    "distribution": "DISTRIBUTION",
    "auth": "AUTH",
    "services": "SERVICES",
    "tasks": "TASKS",
    "configs": "CONFIGS",
    "secrets": "SECRETS",
    "nodes": "NODES",
}
_ROW = re.compile(r"^\| `(GET|HEAD|POST|PUT|DELETE) (/[^`]*)` \| `?([A-Z_]+)`? \|")


def documented_endpoints() -> dict[str, str]:
    """``METHOD /path`` -> proxy variable, from the table of docs/security.md."""
    rows: dict[str, str] = {}
    for line in SECURITY_DOC.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            rows[f"{match[1]} {match[2]}"] = match[3]
    return rows


def test_the_documented_table_names_the_right_proxy_variables() -> None:
    rows = documented_endpoints()
    assert len(rows) >= 20, "the endpoint table of docs/security.md was not found"
    for call, variable in rows.items():
        prefix = call.split(" ", 1)[1].strip("/").split("/")[0]
        assert _PROXY_VARIABLES[prefix] == variable, call


@pytest.fixture
def built_images_removed(docker_client: docker.DockerClient, project_name: str) -> Iterator[None]:
    """The tool service's image is this test's own; ``remove_project`` keeps images."""
    yield
    for image in docker_client.images.list(name=f"{project_name}-tool"):
        for tag in image.tags:
            docker_client.images.remove(tag)


@pytest.mark.usefixtures("built_images_removed")
def test_every_docker_call_of_a_representative_workload_is_documented(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    documented = documented_endpoints()
    with RecordingDockerProxy(tmp_path / "docker.sock") as proxy:
        cli = make_cli(
            tmp_path,
            repo_url=git_daemon.url,
            project=project_name,
            extra={
                "DOCKER_HOST": proxy.docker_host,
                "DB_ROOT_PASSWORD": ROOT_PASSWORD,
                "BACKUP_TARGET": f"file://{tmp_path}/backups",
            },
        )
        git_daemon.commit_files(
            {
                "desired-state/compose.yaml": COMPOSE.format(greeting="one", tool=TOOL),
                "desired-state/backup.yaml": BACKUP,
                "desired-state/restore.yaml": "restores: []\n",
                "images/tool/Dockerfile": DOCKERFILE,
            }
        )
        cli.run("sync", check=True)
        cli.run("backup", "run", check=True)
        # A restore by commit, a recreate (web's command changes) and a removal (tool).
        git_daemon.commit_files(
            {
                "desired-state/compose.yaml": COMPOSE.format(greeting="two", tool=""),
                "desired-state/restore.yaml": RESTORE,
            }
        )
        result = cli.run("sync")
        assert result.returncode == 0, result.stderr[-3000:]
        assert cli.run("plan").returncode == 0
        # The restore drill: a scratch volume and a scratch MariaDB, removed afterwards.
        cli.run("restore", "latest", "--drill", "--yes", check=True)
        status = cli.status()
        calls = list(proxy.calls)

    # The workload did what it says, or the list below would prove little.
    assert {r["id"]: r["state"] for r in status["restores"]} == {"r1": "succeeded"}
    running = {
        c.labels[labels.SERVICE]
        for c in docker_client.containers.list(
            filters={"label": f"{labels.PROJECT}={project_name}"}
        )
    }
    assert running == {"web", "db"}

    seen = {normalise(method, target) for method, target in calls}
    missing = sorted(seen - set(documented))
    assert not missing, f"Docker API calls missing from the table of docs/security.md: {missing}"
    # The calls that make the socket dangerous are really made (or the doc overstates).
    for call in (
        "POST /containers/{id}/exec",
        "POST /exec/{id}/start",
        "POST /build",
        "POST /networks/{id}/connect",
        "DELETE /networks/{id}",
    ):
        assert call in seen
