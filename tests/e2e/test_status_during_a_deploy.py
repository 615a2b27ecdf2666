"""``status`` while a deploy runs: a Reconciling condition with the commit and the step."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import make_cli
from tests.fixtures.git_remotes import ServedRemote

pytestmark = pytest.mark.integration

# Healthy only after a few seconds: the deploy waits for it, and status looks meanwhile.
SLOW = """\
services:
  app:
    image: reconciler-local/busybox:latest
    command: ["sh", "-c", "sleep 6; touch /tmp/ok; exec sleep 100000"]
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ok"]
      interval: 1s
      timeout: 1s
      retries: 30
"""


def test_status_shows_the_deploy_that_runs_and_then_no_more(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
    sha = git_daemon.commit_files({"desired-state/compose.yaml": SLOW})
    assert cli.status()["reconciling"] is None
    sync = cli.popen("sync")
    seen = None
    deadline = time.monotonic() + 120
    while sync.poll() is None and time.monotonic() < deadline:
        report = cli.status()
        if report["reconciling"]:
            seen = report["reconciling"]
            break
        time.sleep(0.2)
    _out, err = sync.communicate(timeout=180)
    assert sync.returncode == 0, err
    assert seen is not None, "status never showed the deploy"
    assert seen["commit"] == sha
    assert seen["actions"] == 2
    assert seen["step"]  # an action of the plan, or the images being prepared
    text = cli.run("status", check=True).stdout
    assert "Reconciling" not in text
    assert cli.status()["reconciling"] is None
