"""Deploy on push, end to end: the real daemon, a git daemon on loopback, the real engine."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler import labels
from reconciler.decide.webhooks import signature_of
from tests.e2e.conftest import make_cli, project_containers
from tests.e2e.test_metrics import COMPOSE, Logs, free_port, scrape
from tests.fixtures.git_remotes import ServedRemote

pytestmark = pytest.mark.integration

SECRET = "e2e-webhook-secret-" + uuid.uuid4().hex


def hook(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks/push", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def github_push(commit: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + signature_of(SECRET, body),
    }


def test_a_signed_push_deploys_without_waiting_for_the_poll(
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
        extra={
            "RECONCILER_METRICS_ADDR": f"127.0.0.1:{port}",
            "RECONCILER_WEBHOOK_SECRET": SECRET,
            # An hour between polls: after the first pass only the hook starts one.
            "RECONCILER_INTERVAL": "3600",
        },
    )
    first = git_daemon.commit_files({"desired-state/compose.yaml": COMPOSE})
    daemon = cli.popen("run")
    logs = Logs(daemon)
    container = f"{project_name}-app-1"

    def commit_running() -> str | None:
        raw = project_containers(docker_client, project_name).get(container)
        return (raw.get("Labels") or {}).get(labels.COMMIT) if raw else None

    def wait_for(commit: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and commit_running() != commit:
            assert daemon.poll() is None, "".join(logs.lines)[-3000:]
            time.sleep(0.2)
        assert commit_running() == commit, "".join(logs.lines)[-3000:]

    try:
        wait_for(first)
        # A forged delivery is refused and starts nothing.
        body, headers = github_push("f" * 40)
        headers["X-Hub-Signature-256"] = "sha256=" + signature_of("not-the-secret-at-all", body)
        assert hook(port, body, headers)[0] == 403

        second = git_daemon.commit_files(
            {"desired-state/compose.yaml": COMPOSE.replace("100000", "100001")}
        )
        body, headers = github_push(second)
        code, answer = hook(port, body, headers)
        assert (code, answer["result"]) == (202, "accepted"), answer
        wait_for(second)
        # The same delivery again is a replay.
        assert hook(port, body, headers) == (
            403,
            {"result": "stale", "message": "this delivery was received before"},
        )
        counts = {
            dict(labels_)["result"]: value
            for (name, labels_), value in scrape(port).items()
            if name == "reconciler_webhook_requests_total"
        }
        assert (counts["accepted"], counts["bad_signature"], counts["stale"]) == (1, 1, 1)
    finally:
        logs.stop(daemon)
    assert daemon.returncode == 0, "".join(logs.lines)[-3000:]
    events = [e["event"] for e in logs.events()]
    assert "webhook.accepted" in events
    assert events.count("sync.done") == 2  # the first pass and the hook's: no poll came
