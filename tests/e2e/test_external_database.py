"""A MariaDB outside the stack, end to end: backed up, restored by commit, drilled.

The database runs in a container the test starts itself, not labelled as the
project's, on the host's loopback (a published port): the reconciler knows
it only through backup.yaml's ``external_databases`` entry, reaches it from a
short-lived helper of the MariaDB image already on the engine, and reads its
password from the env file. A second database of the same server, not named
in the entry, is neither dumped nor dropped.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler import labels
from reconciler.backup.backing_up import run_backup
from reconciler.backup.backup_target import open_target
from reconciler.backup.stored_backups import read_manifest
from reconciler.model.backup_policy import load_backup_policy
from reconciler.model.loading import load_desired_state
from tests.conftest import TEST_HELPER_IMAGE
from tests.e2e.conftest import Cli, make_cli
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import FAKE_KEY, FAKE_SECRET, REGION, S3Server
from tests.integration.backup_stack import MARIADB, ROOT_PASSWORD, run_sql, wait_healthy

pytestmark = pytest.mark.integration

APP_PASSWORD = "app-password-not-in-git"

COMPOSE = """\
services:
  web:
    image: reconciler-local/busybox:latest
    command: ["sh", "-c", "exec httpd -f -p 8080 -h /data"]
    volumes: ["site:/data"]
    healthcheck:
      test: ["CMD-SHELL", "pidof httpd >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 10
    stop_grace_period: 1s
volumes:
  site:
"""

BACKUP = """\
target: ${{BACKUP_TARGET}}
external_databases:
  - name: shopdb
    host: 127.0.0.1
    port: {port}
    user: app
    password_from: SHOP_DB_PASSWORD
    databases: [shop]
    tls: off
    image: reconciler-local/mariadb:local
    stop_services: [web]
"""

ROWS = "SELECT COUNT(*) FROM shop.orders; SELECT COUNT(*) FROM shop.customers;"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def external_db(docker_client: docker.DockerClient, project_name: str) -> Iterator[Any]:
    """A MariaDB no project owns: no project or service label, on 127.0.0.1:PORT."""
    port = free_port()
    container = docker_client.containers.run(
        MARIADB,
        name=f"{project_name}-outside-db",
        detach=True,
        environment={
            "MARIADB_ROOT_PASSWORD": ROOT_PASSWORD,
            "MARIADB_DATABASE": "shop",
            "MARIADB_USER": "app",
            "MARIADB_PASSWORD": APP_PASSWORD,
        },
        ports={"3306/tcp": ("127.0.0.1", port)},
        labels={"test.purpose": "external-database"},
    )
    try:
        wait_healthy(container)
        run_sql(
            container,
            "CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, item VARCHAR(64));"
            "INSERT INTO shop.orders (item) VALUES ('a'),('b'),('c'),('d'),('e');"
            "CREATE TABLE shop.customers (id INT PRIMARY KEY, name TEXT);"
            "INSERT INTO shop.customers VALUES (1,'ana'),(2,'ion');"
            # Another tenant of the same server: never the stack's.
            "CREATE DATABASE other; CREATE TABLE other.t (v INT); INSERT INTO other.t VALUES (1);",
        )
        container.port = port
        yield container
    finally:
        container.remove(force=True, v=True)


class Env:
    def __init__(
        self,
        tmp_path: Path,
        remote: ServedRemote,
        client: docker.DockerClient,
        project: str,
        server: S3Server,
        bucket: str,
    ) -> None:
        self.remote = remote
        self.client = client
        self.project = project
        self.bucket = bucket
        self.tmp_path = tmp_path
        self.environ = {
            "BACKUP_TARGET": f"s3://{bucket}/prod",
            "AWS_ACCESS_KEY_ID": FAKE_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": server.url,
        }
        self.cli: Cli = make_cli(tmp_path, repo_url=remote.url, project=project, extra=self.environ)
        # The password is in the env file only, never in git nor in the process environment.
        (tmp_path / "reconciler.env").write_text(f"SHOP_DB_PASSWORD={APP_PASSWORD}\n")

    def backup(self) -> str:
        root = self.remote.repo.path
        environ = {**self.environ, "SHOP_DB_PASSWORD": APP_PASSWORD}
        desired = load_desired_state(
            root, directory="desired-state", project=self.project, environ=environ
        )
        policy = load_backup_policy(
            root,
            directory="desired-state",
            desired=desired,
            environ=environ,
            default_target="file:///nowhere",
        )
        assert policy is not None
        result = run_backup(
            client=self.client,
            target=open_target(f"s3://{self.bucket}/prod", {**os.environ, **self.environ}),
            helper_image=TEST_HELPER_IMAGE,
            desired=desired,
            policy=policy,
            state_dir=self.tmp_path / "backup-state",
            prune_after=False,
        )
        return result.manifest.id

    def helpers(self) -> list[str]:
        found = self.client.containers.list(
            all=True, filters={"label": [f"{labels.PROJECT}={self.project}", labels.HELPER]}
        )
        return [c.name for c in found]


def test_an_external_database_is_backed_up_restored_by_commit_and_drilled(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_env: S3Server,
    s3_bucket: str,
    external_db: Any,
) -> None:
    env = Env(tmp_path, git_daemon, docker_client, project_name, s3_env, s3_bucket)
    env.remote.commit_files(
        {
            "desired-state/compose.yaml": COMPOSE,
            "desired-state/backup.yaml": BACKUP.format(port=external_db.port),
            "desired-state/restore.yaml": "restores: []\n",
        }
    )
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = run_sql(external_db, ROWS)
    assert rows.split() == ["5", "2"]

    good = env.backup()
    manifest = read_manifest(
        open_target(f"s3://{env.bucket}/prod", {**os.environ, **env.environ}), good
    )
    assert [(a.kind, a.name) for a in manifest.artifacts] == [("database", "shopdb")]
    assert env.helpers() == []  # the dump's helper is gone

    # The data changes: the stack's database and the other tenant's.
    run_sql(external_db, "DELETE FROM shop.orders; DROP TABLE shop.customers;")
    run_sql(external_db, "INSERT INTO other.t VALUES (2);")

    env.remote.commit_files(
        {
            "desired-state/restore.yaml": json.dumps(
                {"restores": [{"id": "r1", "backup": "latest", "databases": ["shopdb"]}]}
            )
        }
    )
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "restore r1: backup " in result.stdout
    assert run_sql(external_db, ROWS) == rows
    # Only the named database was dropped and loaded; the other tenant kept its change.
    assert run_sql(external_db, "SELECT COUNT(*) FROM other.t").split() == ["2"]
    restores = {r["id"]: r for r in env.cli.status()["restores"]}
    assert restores["r1"]["state"] == "succeeded", restores["r1"]
    done = " | ".join(restores["r1"]["done"])
    assert "stopped web" in done
    assert "loaded database shopdb" in done
    web = docker_client.containers.get(labels.container_name(project_name, "web"))
    assert web.status == "running"
    assert env.helpers() == []
    # The password never reached the ledger or the status.
    assert APP_PASSWORD not in json.dumps(env.cli.status())

    # The drill loads the dump into a scratch server, never the external one.
    run_sql(external_db, "INSERT INTO shop.orders (item) VALUES ('after-drill-check');")
    result = env.cli.run("restore", "--drill", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    drill = env.cli.status()["drill"]
    assert drill["result"] == "ok", drill
    assert drill["databases"]["shopdb"]["databases"]["shop"] == 2
    assert run_sql(external_db, "SELECT COUNT(*) FROM shop.orders").split() == ["6"]
    deadline = time.monotonic() + 30
    while env.helpers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert env.helpers() == []
