"""Helpers for end-to-end tests: the real ``reconciler`` CLI, a real git remote, a real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler import labels
from tests.conftest import TEST_BACKUP_KEY, TEST_HELPER_IMAGE


@dataclass
class Cli:
    """Runs ``python -m reconciler`` as a user would, with the test's settings."""

    env: dict[str, str]
    cwd: Path

    def run(
        self, *args: str, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"reconciler {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def status(self) -> dict[str, Any]:
        result = self.run("status", "--json", check=True)
        data: dict[str, Any] = json.loads(result.stdout)
        return data


def make_cli(
    tmp_path: Path, *, repo_url: str, project: str, extra: Mapping[str, str] | None = None
) -> Cli:
    env_file = tmp_path / "reconciler.env"
    env_file.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "AWS_"))}
    env.update(
        {
            "RECONCILER_REPO": repo_url,
            "RECONCILER_PROJECT": project,
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_ENV_FILE": str(env_file),
            "RECONCILER_INTERVAL": "1",
            "RECONCILER_LOG_FORMAT": "json",
            # A daemon under test takes no fixed host port (127.0.0.1:9365 may be
            # a real install's); tests of the endpoints set a free one.
            "RECONCILER_METRICS_ADDR": "off",
            "RECONCILER_BACKUP_KEY": TEST_BACKUP_KEY,
            "RECONCILER_HELPER_IMAGE": TEST_HELPER_IMAGE,
        }
    )
    env.update(extra or {})
    return Cli(env=env, cwd=tmp_path)


def project_containers(client: docker.DockerClient, project: str) -> dict[str, dict[str, Any]]:
    """``{container name: raw list entry}`` of the project's containers, helpers excluded."""
    found: dict[str, dict[str, Any]] = {}
    for raw in client.api.containers(all=True, filters={"label": f"{labels.PROJECT}={project}"}):
        if labels.HELPER in (raw.get("Labels") or {}):
            continue
        found[raw["Names"][0].lstrip("/")] = raw
    return found


@pytest.fixture
def bystander(docker_client: docker.DockerClient, busybox_image: str) -> Any:
    """A container without our labels that must survive every test untouched."""
    container = docker_client.containers.run(
        busybox_image, ["sleep", "100000"], detach=True, name=None, stop_signal="SIGKILL"
    )
    yield container
    container.remove(force=True)
