"""Encrypted secrets in git, end to end: the real CLI, a git daemon, the real engine.

The container gets the decrypted value in its environment; then a commit whose
errors quote the value is synced, and everything the reconciler wrote (every
command's output, every file of the state folder, every label of the project's
containers, volumes and networks) is searched for the plain value.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler import labels
from tests.e2e.conftest import Cli, make_cli, project_containers
from tests.fixtures import tools
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.sops_encoder import sops_dotenv

pytestmark = pytest.mark.integration

GOOD = """\
services:
  app:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
      API_TOKEN: ${API_TOKEN}
      DSN: mysql://app:${DB_PASSWORD}@db/app
    volumes: ["data:/data"]
    stop_grace_period: 1s
volumes:
  data:
"""

# Every error here quotes the interpolated value: a malformed port, a duration.
BROKEN = GOOD.replace(
    "    stop_grace_period: 1s\n",
    "    stop_grace_period: ${DB_PASSWORD}\n    ports: ['${API_TOKEN}']\n",
)


class Transcript:
    """Every output of every command the test ran."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.outputs: list[str] = []

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.cli.run(*args)
        self.outputs += [result.stdout, result.stderr]
        return result


def forms(value: str) -> list[bytes]:
    return [value.encode(), json.dumps(value)[1:-1].encode(), repr(value)[1:-1].encode()]


def project_labels(client: docker.DockerClient, project: str) -> list[str]:
    selector = {"label": f"{labels.PROJECT}={project}"}
    found: list[str] = []
    for raw in client.api.containers(all=True, filters=selector):
        found += [
            f"{k}={v}"
            for k, v in client.api.inspect_container(raw["Id"])["Config"]["Labels"].items()
        ]
    for network in client.api.networks(filters=selector):
        found += [f"{k}={v}" for k, v in (network.get("Labels") or {}).items()]
    for volume in client.api.volumes(filters=selector).get("Volumes") or []:
        found += [f"{k}={v}" for k, v in (volume.get("Labels") or {}).items()]
    return found


def test_a_secret_reaches_the_container_and_nothing_the_reconciler_wrote(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    key_file = tmp_path / "etc" / "age.key"
    cli = make_cli(
        tmp_path,
        repo_url=git_daemon.url,
        project=project_name,
        extra={"RECONCILER_AGE_KEY_FILE": str(key_file)},
    )
    out = Transcript(cli)
    password = "pw-" + secrets.token_hex(12)
    token = "tok-" + secrets.token_hex(12)

    # The VM makes its key; the developer encrypts for its recipient.
    made = out.run("secrets", "keygen")
    assert made.returncode == 0, made.stderr
    recipient = out.run("secrets", "recipient").stdout.strip()
    assert recipient.startswith("age1")
    assert recipient in made.stdout
    token_file = subprocess.run(
        [tools.require("age"), "-r", recipient, "-a"],
        input=f"API_TOKEN={token}\n".encode(),
        capture_output=True,
        check=True,
    ).stdout
    git_daemon.commit_files(
        {
            "desired-state/compose.yaml": GOOD,
            "desired-state/secrets.sops.env": sops_dotenv({"DB_PASSWORD": password}, recipient),
            "desired-state/token.env.age": token_file,
        }
    )

    assert out.run("plan").returncode == 2
    synced = out.run("sync")
    assert synced.returncode == 0, synced.stderr
    (container,) = project_containers(docker_client, project_name).values()
    env = docker_client.api.inspect_container(container["Id"])["Config"]["Env"]
    assert f"DB_PASSWORD={password}" in env
    assert f"API_TOKEN={token}" in env
    assert f"DSN=mysql://app:{password}@db/app" in env
    assert out.run("plan").returncode == 0  # the keyed hash is stable across processes

    # A commit whose errors would quote both values: it stalls, nothing changes.
    git_daemon.commit_files({"desired-state/compose.yaml": BROKEN})
    broken = out.run("sync")
    assert broken.returncode == 1
    assert "stop_grace_period" in broken.stderr
    assert "ports" in broken.stderr
    assert "***" in broken.stderr
    assert out.run("plan").returncode == 1
    status = out.run("status", "--json")
    assert json.loads(status.stdout)["reason"] == "ValidationFailed"
    out.run("status")
    folder = tmp_path / "checkout" / "desired-state"
    folder.mkdir(parents=True)
    for name, content in {
        "compose.yaml": BROKEN,
        "secrets.sops.env": sops_dotenv({"DB_PASSWORD": password}, recipient),
    }.items():
        (folder / name).write_text(content)
    assert out.run("validate", str(folder)).returncode == 1
    (after,) = project_containers(docker_client, project_name).values()
    assert after["Id"] == container["Id"]

    # A tampered secrets file stalls the commit too; the running service stays.
    good_file = sops_dotenv({"DB_PASSWORD": password}, recipient)
    name, _, rest = good_file.partition("=ENC[AES256_GCM,data:")
    flipped = ("B" if rest[0] == "A" else "A") + rest[1:]
    git_daemon.commit_files(
        {
            "desired-state/compose.yaml": GOOD,
            "desired-state/secrets.sops.env": f"{name}=ENC[AES256_GCM,data:{flipped}",
        }
    )
    tampered = out.run("sync")
    assert tampered.returncode == 1
    assert "desired-state/secrets.sops.env: cannot decrypt: DB_PASSWORD" in tampered.stderr
    (after,) = project_containers(docker_client, project_name).values()
    assert after["Id"] == container["Id"]
    git_daemon.commit_files({"desired-state/secrets.sops.env": good_file})
    assert out.run("sync").returncode == 0
    (after,) = project_containers(docker_client, project_name).values()
    assert after["Id"] == container["Id"]  # same value, same keyed hash: not recreated

    # Search everything the reconciler wrote for the plain values.
    written: list[tuple[str, bytes]] = [
        (f"output {i}", text.encode()) for i, text in enumerate(out.outputs)
    ]
    state = tmp_path / "state"
    written += [(str(p), p.read_bytes()) for p in state.rglob("*") if p.is_file()]
    written += [("label", text.encode()) for text in project_labels(docker_client, project_name)]
    assert len(written) > 10
    assert any(b"ValidationFailed" in data for _, data in written)
    key_text = key_file.read_text().split()[-1].encode()
    leaks: list[Any] = [
        (where, form)
        for where, data in written
        for value in (password, token)
        for form in forms(value)
        if form in data
    ]
    leaks += [where for where, data in written if key_text in data]
    assert leaks == []
