"""A recreate says why, end to end (issue 14): each ``reconciler`` run is a new process,
so the reason must come from the containers' labels, never from a process's memory."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import docker
import pytest

from reconciler import labels
from reconciler.decide.hashing import config_parts
from reconciler.model.desired import ServiceSpec
from tests.e2e.conftest import make_cli, project_containers
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.sops_encoder import sops_dotenv

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  web:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    env_file: web.env
    environment:
      API_TOKEN: "{token}"
    volumes: ["./conf/hello.txt:/srv/hello.txt:ro"]
    stop_grace_period: 1s
  db:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    stop_grace_period: 1s
"""


def test_plan_and_sync_name_what_changed_and_never_a_value(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
    p = project_name
    git_daemon.commit_files(
        {
            "desired-state/compose.yaml": COMPOSE.format(token="first-token-value"),
            "desired-state/web.env": "GREETING=hello\n",
            "desired-state/conf/hello.txt": "hello\n",
        }
    )
    cli.run("sync", check=True)
    db_id = project_containers(docker_client, p)[f"{p}-db-1"]["Id"]

    # Only web.env changes: a fresh process plans it, the sync names the file.
    git_daemon.commit_files({"desired-state/web.env": "GREETING=bonjour\n"})
    reason = "recreate service web: environment.GREETING, desired-state/web.env changed"
    planned = cli.run("plan")
    assert planned.returncode == 2, planned.stderr
    assert reason in planned.stdout
    again = cli.run("plan")  # another new process: the same reason
    assert reason in again.stdout
    synced = cli.run("sync", check=True)
    assert reason in synced.stdout
    assert cli.status()["history"][0]["changes"] == [reason]

    # Only a value in compose.yaml: its name, never the value.
    git_daemon.commit_files(
        {"desired-state/compose.yaml": COMPOSE.format(token="second-token-value")}
    )
    synced = cli.run("sync", check=True)
    assert "recreate service web: environment.API_TOKEN changed" in synced.stdout
    everything = synced.stdout + synced.stderr + cli.run("status", "--json").stdout
    assert "token-value" not in everything

    # A bind-mounted repository file, by its path.
    git_daemon.commit_files({"desired-state/conf/hello.txt": "bonjour\n"})
    synced = cli.run("sync", check=True)
    assert "recreate service web: desired-state/conf/hello.txt changed" in synced.stdout
    # db never changed: never recreated.
    assert project_containers(docker_client, p)[f"{p}-db-1"]["Id"] == db_id


SECRET_COMPOSE = """\
services:
  app:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
    stop_grace_period: 1s
"""


def test_a_new_secret_is_named_and_its_parts_label_is_keyed(
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
    cli.run("secrets", "keygen", check=True)
    recipient = cli.run("secrets", "recipient", check=True).stdout.strip()
    old, new = "pw-" + secrets.token_hex(12), "pw-" + secrets.token_hex(12)
    git_daemon.commit_files(
        {
            "desired-state/compose.yaml": SECRET_COMPOSE,
            "desired-state/secrets.sops.env": sops_dotenv({"DB_PASSWORD": old}, recipient),
        }
    )
    cli.run("sync", check=True)
    git_daemon.commit_files(
        {"desired-state/secrets.sops.env": sops_dotenv({"DB_PASSWORD": new}, recipient)}
    )

    planned = cli.run("plan")
    synced = cli.run("sync", check=True)
    for output in (planned.stdout, synced.stdout):
        assert "recreate service app: environment.DB_PASSWORD changed" in output
    (container,) = project_containers(docker_client, project_name).values()
    parts = json.loads(container["Labels"][labels.CONFIG_PARTS])
    # Not a digest anyone could check a guess against: the value is keyed first.
    plain = config_parts(
        ServiceSpec.model_validate(
            {
                "name": "app",
                "image": "reconciler-local/busybox:latest",
                "environment": {"DB_PASSWORD": new},
            }
        )
    )
    assert parts["environment.DB_PASSWORD"] != plain["environment.DB_PASSWORD"]
    everything = planned.stdout + planned.stderr + synced.stdout + synced.stderr
    everything += json.dumps(container["Labels"]) + cli.run("status", "--json").stdout
    for value in (old, new):
        assert value not in everything


def test_a_tag_moved_to_another_image_recreates_its_service_once(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    repository = f"reconciler-it-moved-{secrets.token_hex(4)}"
    reference = f"{repository}:1"
    busybox = docker_client.images.get("reconciler-local/busybox:latest")
    busybox.tag(repository, "1")
    context = tmp_path / "newer"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM reconciler-local/busybox:latest\nLABEL dev.reconciler.test=moved-{repository}\n"
    )
    try:
        cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name)
        git_daemon.commit_files(
            {
                "desired-state/compose.yaml": (
                    f"services:\n  app:\n    image: {reference}\n    pull_policy: never\n"
                    '    command: ["sleep", "100000"]\n    stop_grace_period: 1s\n'
                )
            }
        )
        cli.run("sync", check=True)
        # Outside any pass, as a `docker pull` or a CI build would: the tag moves.
        newer, _ = docker_client.images.build(path=str(context), tag=reference, rm=True)

        reason = f"recreate service app: image {reference} moved to another image"
        planned = cli.run("plan")
        assert planned.returncode == 2, planned.stderr
        assert reason in planned.stdout
        synced = cli.run("sync", check=True)
        assert reason in synced.stdout
        (container,) = project_containers(docker_client, project_name).values()
        assert container["ImageID"] == newer.id
        assert cli.run("plan").returncode == 0  # converged: no recreate loop
    finally:
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{labels.PROJECT}={project_name}"}
        ):
            container.remove(force=True)
        docker_client.images.remove(reference, force=True)
