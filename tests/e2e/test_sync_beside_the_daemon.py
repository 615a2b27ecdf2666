"""``reconciler sync`` beside a running daemon: the daemon runs the pass (daemon/control.py).

A real daemon process, a real git remote and the real engine: the command's
output is the daemon's pass, and the command itself runs none.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import make_cli, project_containers
from tests.e2e.test_metrics import Logs
from tests.fixtures.git_remotes import ServedRemote

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  app:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    environment:
      VERSION: "{version}"
"""


@pytest.fixture
def short_state_dir() -> Iterator[Path]:
    # A Unix socket's path has at most 107 bytes; pytest's tmp_path may be longer.
    with tempfile.TemporaryDirectory(prefix="rc-", dir="/tmp") as folder:
        yield Path(folder)


def test_sync_beside_a_running_daemon_is_the_daemons_pass(
    tmp_path: Path,
    short_state_dir: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    cli = make_cli(
        tmp_path,
        repo_url=git_daemon.url,
        project=project_name,
        # The loop passes once at start, then not for an hour: any later pass
        # is the one the command asked for.
        extra={"RECONCILER_STATE_DIR": str(short_state_dir), "RECONCILER_INTERVAL": "3600"},
    )
    git_daemon.commit_files({"desired-state/compose.yaml": COMPOSE.format(version=1)})
    daemon = cli.popen("run")
    logs = Logs(daemon)
    try:
        deadline = time.monotonic() + 120
        while not any(e.get("event") == "sync.done" for e in logs.events()):
            assert daemon.poll() is None, "".join(logs.lines)[-3000:]
            assert time.monotonic() < deadline, "".join(logs.lines)[-3000:]
            time.sleep(0.2)
        assert (short_state_dir / "control.sock").is_socket(), "".join(logs.lines)[-3000:]

        second = git_daemon.commit_files({"desired-state/compose.yaml": COMPOSE.format(version=2)})
        result = cli.run("sync")
        assert result.returncode == 0, result.stderr
        assert "recreate service app" in result.stdout
        assert f"commit {second[:12]}: converged (1 change(s))" in result.stdout
        # The command ran no pass of its own: its log has no pass events.
        assert '"event": "sync.start"' not in result.stderr
        assert any(e.get("event") == "control.sync" for e in logs.events())
        app = project_containers(docker_client, project_name)[f"{project_name}-app-1"]
        assert app["Labels"]["dev.reconciler.commit"] == second

        # Another branch than the daemon's: the daemon refuses and the command
        # runs its own pass with its own settings (and fails: no such branch).
        other = cli.run("--branch", "no-such-branch", "sync")
        assert other.returncode == 1
        assert "branch 'no-such-branch' not found" in other.stderr
    finally:
        logs.stop(daemon)
    assert not (short_state_dir / "control.sock").exists()
