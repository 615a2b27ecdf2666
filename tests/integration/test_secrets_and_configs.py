"""Compose's secrets and configs on the real engine: loaded from a repository with a
plain file, an encrypted file and inline content, planned, applied, then read back
inside the container at Compose's paths with the modes and owners asked for.

A second plan is a no-op; a changed secret file recreates the one service granted
it, and the plan says which secret. The project's containers are removed by the
``project_name`` fixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.adapters.docker_engine import DockerEngine
from reconciler.decide.actions import CreateService, RecreateService
from reconciler.decide.planning import plan
from reconciler.deploy.applying import apply
from reconciler.model.desired import DesiredState
from reconciler.model.loading import load_desired_state
from reconciler.model.secrets import read_secrets
from reconciler.redaction import forget_secrets
from reconciler.secret_keys import keygen, load_keyring, recipient_of
from tests.fixtures.sops_encoder import sops_dotenv

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  app:
    image: {image}
    command: ["sleep", "100000"]
    user: "1000"
    stop_grace_period: 1s
    secrets:
      - db-password
      - source: app-env
        target: app.env
        uid: "1000"
        gid: "1001"
        mode: 0400
    configs:
      - source: site
        target: /etc/site/site.conf
        mode: 0o440
      - greeting
  other:
    image: {image}
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    configs: [greeting]
secrets:
  db-password:
    file: ./secrets/db-password.txt
  app-env:
    file: ./app.sops.env
configs:
  site:
    file: ./site.conf
  greeting:
    content: hello ${{WHO}}
"""


@pytest.fixture(autouse=True)
def _forget() -> Any:
    yield
    forget_secrets()


def _load(root: Path, key: Path, project: str) -> DesiredState:
    secrets = read_secrets(root, directory="desired-state", keyring=load_keyring(key))
    return load_desired_state(root, project=project, environ={"WHO": "world"}, secrets=secrets)


def _read(client: docker.DockerClient, container_id: str, path: str) -> tuple[str, str]:
    """The file's content, and ``mode uid gid``, read as the container's own user."""
    container = client.containers.get(container_id)
    code, content = container.exec_run(["cat", path])
    assert code == 0, content
    code, stat = container.exec_run(["stat", "-c", "%a %u %g", path])
    assert code == 0, stat
    return content.decode(), stat.decode().strip()


def test_secrets_and_configs_are_in_the_container_and_a_change_recreates_only_their_user(
    tmp_path: Path,
    engine: DockerEngine,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    key = tmp_path / "vm" / "age.key"
    keygen(key)
    root = tmp_path / "repo"
    folder = root / "desired-state"
    (folder / "secrets").mkdir(parents=True)
    (folder / "compose.yaml").write_text(COMPOSE.format(image=busybox_image))
    (folder / "secrets" / "db-password.txt").write_text("first-db-password")
    (folder / "app.sops.env").write_text(
        sops_dotenv({"API_TOKEN": "token-from-git-1234"}, recipient_of(key)[0])
    )
    (folder / "site.conf").write_text("listen 80\n")

    desired = _load(root, key, project_name)
    first = plan(desired, engine.observe(project_name))
    assert sorted(a.service.name for a in first.actions if isinstance(a, CreateService)) == [
        "app",
        "other",
    ]
    apply(first, engine, project=project_name, commit="1" * 40)
    observed = engine.observe(project_name)
    ids = {c.service: c.id for c in observed.containers if c.project == project_name}

    # Compose's places; Compose's default mode 0444 and root as owner when none is given.
    assert _read(docker_client, ids["app"], "/run/secrets/db-password") == (
        "first-db-password",
        "444 0 0",
    )
    assert _read(docker_client, ids["app"], "/run/secrets/app.env") == (
        "API_TOKEN=token-from-git-1234\n",
        "400 1000 1001",
    )
    assert _read(docker_client, ids["app"], "/etc/site/site.conf") == ("listen 80\n", "440 0 0")
    assert _read(docker_client, ids["app"], "/greeting") == ("hello world", "444 0 0")
    assert _read(docker_client, ids["other"], "/greeting") == ("hello world", "444 0 0")
    # The decrypted value is on no label (the hash keys it).
    for container in observed.containers:
        assert "token-from-git-1234" not in str(container.labels)

    # The same commit again: nothing to do.
    assert plan(_load(root, key, project_name), observed).empty

    # A new secret: the service granted it is recreated, the other is not.
    (folder / "secrets" / "db-password.txt").write_text("second-db-password")
    second = plan(_load(root, key, project_name), observed)
    assert len(second.actions) == 1
    (action,) = second.actions
    assert isinstance(action, RecreateService)
    assert action.service.name == "app"
    assert "secrets.db-password" in action.reason
    assert "second-db-password" not in action.reason
    apply(second, engine, project=project_name, commit="2" * 40)
    after = engine.observe(project_name)
    new_ids = {c.service: c.id for c in after.containers if c.project == project_name}
    assert new_ids["other"] == ids["other"]
    assert new_ids["app"] != ids["app"]
    assert _read(docker_client, new_ids["app"], "/run/secrets/db-password")[0] == (
        "second-db-password"
    )
    assert plan(_load(root, key, project_name), after).empty
