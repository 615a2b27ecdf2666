"""Signed commits, end to end: the real CLI with RECONCILER_VERIFY=ssh, a git daemon,
the real engine. An unsigned commit that asks for a restore changes nothing that
runs and runs no restore; ``status --json`` and ``plan`` say why; a signed commit
on top of it applies, restore request included (the signer vouches for the tree)."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from reconciler import labels
from tests.e2e.conftest import make_cli
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.signing_keys import SshSigner, signed_commit

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  web:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    environment: {{VERSION: "{version}"}}
    volumes: ["site:/site"]
    stop_grace_period: 1s
volumes:
  site:
"""


def files(version: str, restores: list[dict[str, str]], target: Path) -> dict[str, str]:
    return {
        "desired-state/compose.yaml": COMPOSE.format(version=version),
        "desired-state/backup.yaml": f"target: file://{target}\nvolumes: [site]\n",
        "desired-state/restore.yaml": json.dumps({"restores": restores}),  # JSON is YAML
    }


def test_an_unsigned_restore_request_neither_deploys_nor_restores(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    alice = SshSigner.make(tmp_path / "keys", "alice")
    signers = tmp_path / "allowed_signers"
    signers.write_text(alice.allowed_line)
    backups = tmp_path / "backups"
    cli = make_cli(
        tmp_path,
        repo_url=git_daemon.url,
        project=project_name,
        extra={"RECONCILER_VERIFY": "ssh", "RECONCILER_ALLOWED_SIGNERS": str(signers)},
    )
    repo = git_daemon.repo
    name = labels.container_name(project_name, "web")

    first = signed_commit(repo, files("1", [], backups), alice)
    cli.run("sync", check=True)
    cli.run("backup", "run", check=True)
    web = docker_client.containers.get(name)
    assert web.exec_run(["sh", "-c", "echo after-backup > /site/marker"]).exit_code == 0

    request = [{"id": "unsigned-restore", "backup": "latest"}]
    unsigned = signed_commit(repo, files("2", request, backups), None)
    result = cli.run("sync")

    why = f"commit {unsigned[:12]}: not signed by an allowed key: no signature"
    assert result.returncode == 1
    assert "VerificationFailed" in result.stderr
    assert why in result.stderr
    web.reload()
    assert web.labels[labels.COMMIT] == first  # not recreated
    assert web.attrs["State"]["Running"]
    assert web.exec_run(["cat", "/site/marker"]).output == b"after-backup\n"  # not restored
    status = cli.status()
    assert (status["applied_commit"], status["attempted_commit"]) == (first, unsigned)
    assert (status["reason"], status["ready"], status["verify"]) == (
        "VerificationFailed",
        False,
        "ssh",
    )
    assert status["last_error"] == why
    assert "unsigned-restore" not in {r["id"] for r in status["restores"]}
    ledger = tmp_path / "state" / "restores.json"
    assert "unsigned-restore" not in (ledger.read_text() if ledger.exists() else "")
    plan = cli.run("plan")
    assert plan.returncode == 1
    assert why in plan.stderr

    # A signer who commits on top vouches for the whole tree, the request included.
    signed = signed_commit(repo, files("3", request, backups), alice, message="reviewed")
    cli.run("sync", check=True)
    web = docker_client.containers.get(name)
    assert web.labels[labels.COMMIT] == signed
    restores = {r["id"]: r for r in cli.status()["restores"]}
    assert restores["unsigned-restore"]["state"] == "succeeded"
    assert web.exec_run(["test", "-e", "/site/marker"]).exit_code == 1  # restored
