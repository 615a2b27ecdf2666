"""Notifications from the real CLI: real git and engine, a receiver of our own on loopback.

``responses`` cannot reach into the ``reconciler`` subprocess, so a small
HTTP server in the test plays both the webhook and a Gitea API (the forge's
calls are checked against the real APIs by tests/unit/test_notifying.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import TEST_BACKUP_KEY
from tests.e2e.conftest import make_cli, project_containers
from tests.fixtures.git_remotes import ServedRemote

pytestmark = pytest.mark.integration

GOOD = """\
services:
  app:
    image: {image}
    command: ["sleep", "100000"]
    stop_grace_period: 1s
"""
BROKEN = GOOD + "    imagee: typo\n"
SECRET_PATH = "/hook/s3cr3t-path"
TOKEN = "gitea-token-s3cr3t"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    url: str
    calls: list[Received] = field(default_factory=list)

    def at(self, prefix: str) -> list[Received]:
        return [c for c in self.calls if c.path.startswith(prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    calls: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = raw.decode(errors="replace")  # a ping's text body
            calls.append(Received(self.path, dict(self.headers), body))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", calls)
    server.shutdown()
    server.server_close()


def test_sync_sets_commit_statuses_and_sends_one_failure(
    tmp_path: Path,
    git_daemon: ServedRemote,
    receiver: Receiver,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    # Serve the remote as acme/shop.git, so owner/repo parse as on a forge.
    (git_daemon.repo.remote.parent / "acme").mkdir()
    (git_daemon.repo.remote.parent / "acme" / "shop.git").symlink_to(git_daemon.repo.remote)
    cli = make_cli(
        tmp_path,
        repo_url=git_daemon.url.replace(git_daemon.repo.remote.name, "acme/shop.git"),
        project=project_name,
        extra={
            "RECONCILER_NOTIFY_WEBHOOK_URL": receiver.url + SECRET_PATH,
            "RECONCILER_COMMIT_STATUS_TOKEN": TOKEN,
            "RECONCILER_COMMIT_STATUS_PROVIDER": "gitea",
            "RECONCILER_COMMIT_STATUS_API": receiver.url + "/api/v1",
        },
    )
    good = git_daemon.commit_files({"desired-state/compose.yaml": GOOD.format(image=busybox_image)})
    cli.run("sync", check=True)
    cli.run("sync", check=True)
    assert f"{project_name}-app-1" in project_containers(docker_client, project_name)
    statuses = receiver.at(f"/api/v1/repos/acme/shop/statuses/{good}")
    assert [c.body["state"] for c in statuses] == ["pending", "success"]
    assert statuses[0].headers["Authorization"] == f"token {TOKEN}"
    assert statuses[0].body["context"] == f"reconciler/{project_name}"

    broken = git_daemon.commit_files(
        {"desired-state/compose.yaml": BROKEN.format(image=busybox_image)}
    )
    first = cli.run("sync")
    second = cli.run("sync")
    assert first.returncode != 0
    assert second.returncode != 0
    hooks = receiver.at(SECRET_PATH)
    assert [c.body["event"] for c in hooks] == ["pass.failed"]  # once, not every pass
    assert hooks[0].body["commit"] == broken
    assert hooks[0].body["project"] == project_name
    assert "imagee" in hooks[0].body["message"]
    assert [c.body["state"] for c in receiver.at(f"/api/v1/repos/acme/shop/statuses/{broken}")] == [
        "failure"
    ]
    # The secret path and the token never reach a log line of the CLI.
    for output in (first.stderr, second.stderr, first.stdout):
        assert "s3cr3t" not in output


def test_backups_ping_and_notify_through_the_real_backup(
    tmp_path: Path, receiver: Receiver, docker_client: docker.DockerClient, busybox_image: str
) -> None:
    from reconciler.backup.backup_jobs import BackupContext, backup_now
    from reconciler.model.backup_policy import BackupPolicy
    from reconciler.model.desired import DesiredState
    from reconciler.settings import load_settings

    settings = load_settings(
        {
            "RECONCILER_REPO": str(tmp_path / "repo"),
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_ENV_FILE": "/dev/null",
            "RECONCILER_NOTIFY_WEBHOOK_URL": receiver.url + SECRET_PATH,
            "RECONCILER_BACKUP_PING_URL": receiver.url + "/ping/uuid",
            "RECONCILER_BACKUP_KEY": TEST_BACKUP_KEY,
        }
    )
    (tmp_path / "blocker").write_text("a file where the target folder should be")

    def context(target: str) -> BackupContext:
        return BackupContext(
            settings=settings,
            desired=DesiredState(project="tnotify", services={}, networks={}, volumes={}),
            policy=BackupPolicy(target=target),
            commit="a" * 40,
            helper_image=busybox_image,
        )

    with pytest.raises(Exception, match="blocker"):
        backup_now(context(f"file://{tmp_path}/blocker/backups"))
    result = backup_now(context(f"file://{tmp_path}/backups"))

    assert [c.path for c in receiver.at("/ping/")] == [
        "/ping/uuid/start",
        "/ping/uuid/fail",
        "/ping/uuid/start",
        "/ping/uuid",
    ]
    hooks = [c.body["event"] for c in receiver.at(SECRET_PATH)]
    assert hooks == ["backup.failed", "backup.recovered"]
    assert result.manifest.id in receiver.at(SECRET_PATH)[1].body["message"]
