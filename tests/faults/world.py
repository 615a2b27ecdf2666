"""One case's world: a served git remote, the real CLI, the engine, maybe a bucket.

Stacks are small on purpose (busybox services, one tiny MariaDB where a
backup or a restore needs one) so that a case can run its fault 20 times.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from tests.e2e.conftest import Cli, make_cli
from tests.faults.invariants import check_converged
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import FAKE_KEY, FAKE_SECRET, REGION
from tests.integration.backup_stack import ROOT_PASSWORD

BUSYBOX = "reconciler-local/busybox:latest"
MARIADB = "reconciler-local/mariadb:local"


def web_service(*, version: str, volumes: Mapping[str, str]) -> dict[str, Any]:
    """A busybox httpd (it stops at once on SIGTERM) with ``VERSION`` and the given mounts."""
    return {
        "image": BUSYBOX,
        "command": ["httpd", "-f", "-p", "8080", "-h", "/"],
        "environment": {"VERSION": version},
        "volumes": [f"{key}:{target}" for key, target in volumes.items()],
        "stop_grace_period": "1s",
    }


def db_service() -> dict[str, Any]:
    return {
        "image": MARIADB,
        "environment": {
            "MARIADB_ROOT_PASSWORD": "${DB_ROOT_PASSWORD}",
            "MARIADB_DATABASE": "shop",
        },
        "volumes": ["dbdata:/var/lib/mysql"],
        "healthcheck": {
            "test": ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"],
            "interval": "1s",
            "timeout": "3s",
            "retries": 60,
        },
        "stop_grace_period": "5s",
    }


def compose(services: Mapping[str, Any], volumes: list[str]) -> str:
    return json.dumps({"services": services, "volumes": {v: {} for v in volumes}})  # JSON is YAML


@dataclass
class World:
    tmp_path: Path
    remote: ServedRemote
    client: docker.DockerClient
    project: str
    bucket: str | None = None
    s3_endpoint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    cli: Cli = field(init=False)

    def __post_init__(self) -> None:
        environ = {"DB_ROOT_PASSWORD": ROOT_PASSWORD, **self.extra}
        if self.bucket:
            environ.update(
                {
                    "BACKUP_TARGET": f"s3://{self.bucket}/prod",
                    "AWS_ACCESS_KEY_ID": FAKE_KEY,
                    "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_ENDPOINT_URL_S3": self.s3_endpoint or "",
                }
            )
        self.cli = make_cli(
            self.tmp_path, repo_url=self.remote.url, project=self.project, extra=environ
        )

    @property
    def state_dir(self) -> Path:
        return self.tmp_path / "state"

    def volume(self, key: str) -> str:
        return f"{self.project}_{key}"

    def commit(self, files: Mapping[str, str]) -> str:
        return self.remote.commit_files({f"desired-state/{k}": v for k, v in files.items()})

    def head(self) -> str:
        return self.remote.repo.head()

    def sync(self) -> None:
        result = self.cli.run("sync", timeout=300)
        assert result.returncode == 0, f"sync failed:\n{result.stderr[-3000:]}"
        check_converged(self.cli, self.head())

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        """The CLI as a background process, its output in a file (never a full pipe)."""
        with (self.tmp_path / log).open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "reconciler", *args],
                env=self.cli.env,
                cwd=self.cli.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def timed(self, *args: str) -> float:
        """Seconds an unkilled run of the command takes (it must succeed)."""
        started = time.monotonic()
        result = self.cli.run(*args, timeout=300)
        took = time.monotonic() - started
        assert result.returncode == 0, f"{args} failed:\n{result.stderr[-3000:]}"
        return took

    def kill_after(self, delay: float, *args: str) -> bool:
        """Run the command and SIGKILL it after ``delay`` s; True when it was still running."""
        proc = self.start(*args, log="killed.log")
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return True


def daemon_converges(world: World, check: Any, *, timeout_s: float = 180) -> None:
    """``reconciler run`` (interval 1 s) reaches ``check()`` by itself; then it is stopped."""
    proc = world.start("run", log="daemon.log")
    last: AssertionError | None = None
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the daemon exited {proc.returncode}"
            try:
                check()
                return
            except AssertionError as exc:
                last = exc
            time.sleep(1)
        raise AssertionError(f"the daemon did not converge in {timeout_s}s: {last}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
