"""Deploy by git push, end to end: the real CLI, a git daemon on loopback, the real engine."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import docker
import pytest

from reconciler import labels
from tests.e2e.conftest import make_cli, project_containers
from tests.fixtures.git_remotes import ServedRemote, SshRemote

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  web:
    image: reconciler-local/busybox:latest
    command: ["sh", "-c", "echo ok > /site/index.html; exec httpd -f -p 8080 -h /site"]
    environment:
      GREETING: "{greeting}"
    volumes: ["site:/site"]
    ports: ["127.0.0.1::8080"]
    depends_on:
      db: {{condition: service_healthy}}
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"]
      interval: 1s
      timeout: 2s
      retries: 5
    stop_grace_period: 1s
    restart: unless-stopped
  db:
    image: reconciler-local/busybox:latest
    command: ["sh", "-c", "touch /tmp/ready; exec sleep 100000"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 2s
      retries: 3
    stop_grace_period: 1s
    restart: unless-stopped
{extra}
volumes:
  site:
"""

WORKER = """\
  worker:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    stop_grace_period: 1s
"""


def compose(greeting: str = "hello", extra: str = "") -> str:
    return COMPOSE.format(greeting=greeting, extra=extra)


def ids(client: docker.DockerClient, project: str) -> dict[str, str]:
    return {name: raw["Id"] for name, raw in project_containers(client, project).items()}


def test_deploy_change_drift_remove_and_broken_commit(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    bystander: docker.models.containers.Container,
) -> None:
    cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
    p = project_name

    # First deploy.
    first = git_daemon.commit_files({"desired-state/compose.yaml": compose(extra=WORKER)})
    assert cli.run("plan").returncode == 2
    cli.run("sync", check=True)
    running = project_containers(docker_client, p)
    assert set(running) == {f"{p}-web-1", f"{p}-db-1", f"{p}-worker-1"}
    for raw in running.values():
        assert raw["State"] == "running"
        assert raw["Labels"][labels.COMMIT] == first
        assert raw["Labels"][labels.PROJECT] == p
    assert docker_client.networks.get(f"{p}_default").attrs["Labels"][labels.PROJECT] == p
    assert docker_client.volumes.get(f"{p}_site")
    assert cli.run("plan").returncode == 0
    docker_client.containers.get(f"{p}-web-1").exec_run(["sh", "-c", "echo kept > /site/data.txt"])

    # Change one service: only it is recreated, and the volume's data survives.
    before = ids(docker_client, p)
    second = git_daemon.commit_files(
        {"desired-state/compose.yaml": compose("bonjour", extra=WORKER)}
    )
    cli.run("sync", check=True)
    after = ids(docker_client, p)
    assert after[f"{p}-web-1"] != before[f"{p}-web-1"]
    assert after[f"{p}-db-1"] == before[f"{p}-db-1"]
    assert after[f"{p}-worker-1"] == before[f"{p}-worker-1"]
    web = docker_client.containers.get(f"{p}-web-1")
    assert web.labels[labels.COMMIT] == second
    assert "GREETING=bonjour" in web.attrs["Config"]["Env"]
    assert web.exec_run(["cat", "/site/data.txt"]).output == b"kept\n"
    # The untouched service keeps the commit that created it.
    assert docker_client.containers.get(f"{p}-db-1").labels[labels.COMMIT] == first

    # Drift: removed, stopped by hand; put back by the next pass of the same commit.
    docker_client.containers.get(f"{p}-worker-1").remove(force=True)
    docker_client.containers.get(f"{p}-db-1").stop(timeout=1)
    assert cli.run("plan").returncode == 2
    cli.run("sync", check=True)
    running = project_containers(docker_client, p)
    assert {n: r["State"] for n, r in running.items()} == {
        f"{p}-web-1": "running",
        f"{p}-db-1": "running",
        f"{p}-worker-1": "running",
    }

    # A broken commit changes nothing that runs and is reported.
    stable = ids(docker_client, p)
    broken_text = compose("bonjour", extra=WORKER).replace(
        "    image: reconciler", "    imagee: reconciler", 1
    )
    broken = git_daemon.commit_files({"desired-state/compose.yaml": broken_text})
    result = cli.run("sync")
    assert result.returncode == 1
    assert (
        "desired-state/compose.yaml:3: services.web.imagee: unknown key (did you mean 'image'?)"
        in (result.stderr + result.stdout)
    )
    assert ids(docker_client, p) == stable
    status = cli.status()
    assert status["attempted_commit"] == broken
    assert status["applied_commit"] == second
    assert status["ready"] is False
    assert status["reason"] == "ValidationFailed"
    assert "imagee" in status["last_error"]
    assert cli.run("validate", str(tmp_path / "missing")).returncode == 1

    # The next good commit is applied; a removed service goes, its volume stays.
    third = git_daemon.commit_files({"desired-state/compose.yaml": compose("bonjour")})
    cli.run("sync", check=True)
    assert set(project_containers(docker_client, p)) == {f"{p}-web-1", f"{p}-db-1"}
    status = cli.status()
    assert status["applied_commit"] == third
    assert status["ready"] is True
    assert {s["name"]: s["state"] for s in status["services"]} == {
        "web": "running",
        "db": "running",
    }
    assert status["history"][0]["result"] == "succeeded"
    assert any(h["result"] == "stalled" for h in status["history"])
    assert docker_client.volumes.get(f"{p}_site")

    # Through it all, the bystander was never touched.
    bystander.reload()
    assert bystander.status == "running"


def test_failing_health_check_rolls_back(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
    p = project_name
    good = git_daemon.commit_files({"desired-state/compose.yaml": compose()})
    cli.run("sync", check=True)
    old_id = ids(docker_client, p)[f"{p}-web-1"]

    # The new version never answers on its port: its health check fails.
    bad = compose("broken").replace("exec httpd -f -p 8080", "exec httpd -f -p 9999")
    bad = bad.replace("retries: 5", "retries: 2")
    git_daemon.commit_files({"desired-state/compose.yaml": bad})
    result = cli.run("sync")
    assert result.returncode == 1
    assert "rolled back" in result.stderr

    web = project_containers(docker_client, p)
    assert set(web) == {f"{p}-web-1", f"{p}-db-1"}  # no leftover, no duplicate
    assert web[f"{p}-web-1"]["Id"] == old_id
    assert web[f"{p}-web-1"]["State"] == "running"
    assert web[f"{p}-web-1"]["Labels"][labels.COMMIT] == good
    status = cli.status()
    assert status["applied_commit"] == good
    assert status["reason"] == "ApplyFailed"


def test_name_collision_with_a_container_we_do_not_own(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    intruder = docker_client.containers.run(
        busybox_image, ["sleep", "100000"], name=f"{project_name}-db-1", detach=True
    )
    try:
        cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
        git_daemon.commit_files({"desired-state/compose.yaml": compose()})
        result = cli.run("sync")
        assert result.returncode == 1
        assert (
            f"container {project_name}-db-1 exists but belongs to no reconciler project"
            in result.stderr
        )
        assert f"docker rm -f {project_name}-db-1" in result.stderr
        assert project_containers(docker_client, project_name) == {}  # nothing was changed
        intruder.reload()
        assert intruder.status == "running"
        assert intruder.labels == {}
    finally:
        intruder.remove(force=True)


def test_missing_image_touches_nothing(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
    git_daemon.commit_files({"desired-state/compose.yaml": compose()})
    cli.run("sync", check=True)
    before = ids(docker_client, project_name)
    git_daemon.commit_files(
        {
            "desired-state/compose.yaml": compose("x").replace(
                "image: reconciler-local/busybox:latest",
                "image: no-such-registry.invalid/nope:1",
                1,
            )
        }
    )
    result = cli.run("sync")
    assert result.returncode == 1
    assert "no-such-registry.invalid/nope:1" in result.stderr
    assert ids(docker_client, project_name) == before
    assert cli.status()["reason"] == "ImageUnavailable"


def test_sigkill_during_apply_converges_without_duplicates(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
    p = project_name
    git_daemon.commit_files({"desired-state/compose.yaml": compose("v0", extra=WORKER)})
    cli.run("sync", check=True)
    rng = random.Random(20261127)
    for round_ in range(1, 6):
        git_daemon.commit_files({"desired-state/compose.yaml": compose(f"v{round_}", extra=WORKER)})
        proc = cli.popen("sync")
        time.sleep(rng.uniform(0.3, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        cli.run("sync", check=True)
        running = project_containers(docker_client, p)
        assert set(running) == {f"{p}-web-1", f"{p}-db-1", f"{p}-worker-1"}, running.keys()
        assert all(r["State"] == "running" for r in running.values())
        web = docker_client.containers.get(f"{p}-web-1")
        assert f"GREETING=v{round_}" in web.attrs["Config"]["Env"]
        assert cli.run("plan").returncode == 0


def test_deploy_over_ssh_with_a_deploy_key(
    tmp_path: Path, ssh_git_server: SshRemote, docker_client: docker.DockerClient, project_name: str
) -> None:
    remote = ssh_git_server
    cli = make_cli(
        tmp_path,
        repo_url=remote.url,
        project=project_name,
        extra={
            "RECONCILER_SSH_KEY": str(remote.key),
            "RECONCILER_KNOWN_HOSTS": str(remote.known_hosts),
        },
    )
    sha = remote.commit_files({"desired-state/compose.yaml": compose()})
    cli.run("sync", check=True)
    assert (
        project_containers(docker_client, project_name)[f"{project_name}-web-1"]["Labels"][
            labels.COMMIT
        ]
        == sha
    )


def test_daemon_converges_backs_off_and_stops_on_sigterm(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
    p = project_name
    git_daemon.commit_files({"desired-state/compose.yaml": compose()})
    daemon = cli.popen("run")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(project_containers(docker_client, p)) < 2:
            time.sleep(0.5)
        assert set(project_containers(docker_client, p)) == {f"{p}-web-1", f"{p}-db-1"}
        assert cli.run("healthcheck").returncode == 0

        # A push is picked up within a poll interval or so.
        git_daemon.commit_files({"desired-state/compose.yaml": compose(extra=WORKER)})
        while time.monotonic() < deadline and f"{p}-worker-1" not in project_containers(
            docker_client, p
        ):
            time.sleep(0.5)
        assert f"{p}-worker-1" in project_containers(docker_client, p)

        # The remote goes away: containers stay as they are, the daemon backs off.
        stable = ids(docker_client, p)
        git_daemon.stop()
        time.sleep(4)
        assert ids(docker_client, p) == stable
        assert cli.status()["reason"] == "SourceUnavailable"
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err[-2000:]
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "daemon.start" in events
    assert "daemon.backoff" in events
    assert events[-1] == "daemon.stopped"


def test_bind_mounted_repository_files_recreate_only_when_they_change(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
    p = project_name
    stack = """\
services:
  app:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    env_file: app.env
    volumes: ["./conf:/conf:ro"]
"""
    files = {
        "desired-state/compose.yaml": stack,
        "desired-state/app.env": "MODE=one\n",
        "desired-state/conf/site.conf": "listen 80\n",
    }
    git_daemon.commit_files(files)
    cli.run("sync", check=True)
    first = ids(docker_client, p)[f"{p}-app-1"]
    app = docker_client.containers.get(f"{p}-app-1")
    assert app.exec_run(["cat", "/conf/site.conf"]).output == b"listen 80\n"
    assert "MODE=one" in app.attrs["Config"]["Env"]

    # A commit that changes nothing the service uses recreates nothing, even
    # though the repository's files now live in another checkout folder.
    git_daemon.commit_files({"README.md": "docs only\n"})
    cli.run("sync", check=True)
    assert ids(docker_client, p)[f"{p}-app-1"] == first
    assert cli.run("plan").returncode == 0

    # A changed bind-mounted file recreates it, with the new contents.
    git_daemon.commit_files({"desired-state/conf/site.conf": "listen 8080\n"})
    cli.run("sync", check=True)
    second = ids(docker_client, p)[f"{p}-app-1"]
    assert second != first
    app = docker_client.containers.get(f"{p}-app-1")
    assert app.exec_run(["cat", "/conf/site.conf"]).output == b"listen 8080\n"

    # So does a changed env_file.
    git_daemon.commit_files({"desired-state/app.env": "MODE=two\n"})
    cli.run("sync", check=True)
    app = docker_client.containers.get(f"{p}-app-1")
    assert app.id != second
    assert "MODE=two" in app.attrs["Config"]["Env"]
