"""The daemon's /metrics and /healthz over real HTTP: a real git remote, the real engine."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import make_cli, project_containers
from tests.fixtures.git_remotes import ServedRemote

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  app:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    stop_grace_period: 1s
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Logs:
    """The daemon's stderr, drained by a thread (a full pipe would stall the daemon)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self.thread = threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True)
        self.thread.start()

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def stop(self, proc: subprocess.Popen[str]) -> None:
        """SIGTERM, as Docker stops the container; then the pipes are closed."""
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        self.thread.join(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def listening_addresses(port: int) -> set[str]:
    """Local addresses of listening TCP sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def other_host_address() -> str | None:
    """An address of this host that is not loopback (to check the port is not there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for UDP connect
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_daemon_serves_metrics_and_health(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    port = free_port()
    cli = make_cli(
        tmp_path,
        repo_url=git_daemon.url,
        project=project_name,
        extra={"RECONCILER_METRICS_ADDR": f"127.0.0.1:{port}"},
    )
    sha = git_daemon.commit_files({"desired-state/compose.yaml": COMPOSE})
    daemon = cli.popen("run")
    logs = Logs(daemon)
    try:
        deadline = time.monotonic() + 120
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                code, body = get(f"http://127.0.0.1:{port}/healthz")
                health = json.loads(body)
                if code == 200 and health["ready"] and health["applied_commit"] == sha:
                    break
            except OSError:
                pass  # not listening yet
            assert daemon.poll() is None, "".join(logs.lines)[-3000:]
            time.sleep(0.3)
        assert health.get("applied_commit") == sha, (health, "".join(logs.lines)[-3000:])
        assert health["alive"] is True
        assert health["reason"] == "ReconciliationSucceeded"
        assert isinstance(health["heartbeat_age_s"], float)
        assert f"{project_name}-app-1" in project_containers(docker_client, project_name)

        samples = scrape(port)
        passes = {
            labels: value
            for (name, labels), value in samples.items()
            if name == "reconciler_passes_total"
        }
        succeeded = (("reason", "ReconciliationSucceeded"), ("result", "succeeded"))
        assert passes[succeeded] >= 1
        commits = [
            dict(labels)["commit"]
            for (name, labels) in samples
            if name == "reconciler_applied_commit_info"
        ]
        assert commits == [sha]
        assert samples[("reconciler_ready", (("reason", "ReconciliationSucceeded"),))] == 1
        assert samples[("reconciler_loop_alive", ())] == 1
        counted = samples[("reconciler_pass_duration_seconds_count", (("result", "succeeded"),))]
        assert counted >= passes[succeeded]
        assert samples[("reconciler_applied_commit_timestamp_seconds", ())] > 0
        # The same numbers as `reconciler status`.
        assert cli.status()["applied_commit"] == sha

        # Bound to loopback only: listening on 127.0.0.1, not on the host's other addresses.
        assert listening_addresses(port) == {"0100007F"}
        other = other_host_address()
        if other is not None:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((other, port), timeout=3).close()
    finally:
        logs.stop(daemon)
    assert daemon.returncode == 0, "".join(logs.lines)[-3000:]
    events = [e["event"] for e in logs.events()]
    assert "metrics.listening" in events
    assert events[-1] == "daemon.stopped"
    # Stopped with the daemon: nothing listens on the port any more.
    assert listening_addresses(port) == set()


def test_a_taken_port_does_not_stop_deploys(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli = make_cli(
            tmp_path,
            repo_url=git_daemon.url,
            project=project_name,
            extra={"RECONCILER_METRICS_ADDR": f"127.0.0.1:{port}"},
        )
        git_daemon.commit_files({"desired-state/compose.yaml": COMPOSE})
        daemon = cli.popen("run")
        logs = Logs(daemon)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not project_containers(
                docker_client, project_name
            ):
                assert daemon.poll() is None, "".join(logs.lines)[-3000:]
                time.sleep(0.3)
            assert f"{project_name}-app-1" in project_containers(docker_client, project_name)
            assert cli.run("healthcheck").returncode == 0
        finally:
            logs.stop(daemon)
    assert daemon.returncode == 0
    unavailable = [e for e in logs.events() if e["event"] == "metrics.unavailable"]
    assert len(unavailable) == 1
    assert unavailable[0]["address"] == f"127.0.0.1:{port}"
