"""A few of Docker's awesome-compose samples, deployed by the real CLI from a git
remote onto the real engine: the first sync brings them up, the next pass has
nothing to do.

Their compose files come from the corpus (tests/fixtures/awesome_compose.py),
with what this machine needs and nothing more: images of a registry are
replaced by the local busybox, published ports by free ones on loopback (a
sample's port 80 may be taken here). Builds use the placeholder Dockerfile.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler import labels
from tests.e2e.conftest import make_cli, project_containers
from tests.fixtures import awesome_compose as corpus
from tests.fixtures.docker_engine import BUSYBOX_IMAGE
from tests.fixtures.git_remotes import GitWorkRepo

pytestmark = pytest.mark.integration

# All built (tiny contexts), or with one image a stand-in can replace:
# angular binds its code and keeps node_modules in an anonymous volume;
# nginx-nodejs-redis builds three services that depend on each other.
DEPLOYED = ("angular", "django", "nginx-nodejs-redis")
STAND_IN_COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]


def for_this_machine(text: str) -> str:
    """The compose file with local images and free host ports."""
    data = yaml.safe_load(text)
    for svc in data["services"].values():
        if "build" not in svc:
            svc["image"] = BUSYBOX_IMAGE
            svc["command"] = STAND_IN_COMMAND
        svc["ports"] = [_loopback(port) for port in svc.get("ports") or []]
    return yaml.safe_dump(data, sort_keys=False)


def _loopback(port: Any) -> str:
    if isinstance(port, dict):
        return f"127.0.0.1::{port['target']}/{port.get('protocol', 'tcp')}"
    target, _, protocol = str(port).rpartition(":")[2].partition("/")
    return f"127.0.0.1::{target}/{protocol or 'tcp'}"


@pytest.fixture
def built_images_removed(docker_client: docker.DockerClient, project_name: str) -> Iterator[None]:
    """``remove_project`` keeps images: the builds of this project go here."""
    yield
    for image in docker_client.images.list(
        filters={"label": f"{labels.IMAGE_PROJECT}={project_name}"}
    ):
        for tag in image.tags:
            docker_client.images.remove(tag, force=True)


@pytest.mark.usefixtures("built_images_removed")
@pytest.mark.parametrize("sample", DEPLOYED)
def test_a_sample_deploys_and_the_next_pass_has_nothing_to_do(
    sample: str,
    tmp_path: Path,
    git_workrepo: GitWorkRepo,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    files = corpus.layout(corpus.compose_text(sample))
    files[corpus.COMPOSE] = for_this_machine(files[corpus.COMPOSE])
    git_workrepo.commit_files(files, message=f"awesome-compose {sample}")
    cli = make_cli(tmp_path, repo_url=str(git_workrepo.remote), project=project_name)

    cli.run("sync", check=True)

    services = set(yaml.safe_load(files[corpus.COMPOSE])["services"])
    running = project_containers(docker_client, project_name)
    assert set(running) == {labels.container_name(project_name, s) for s in services}
    assert {raw["State"] for raw in running.values()} == {"running"}
    planned = cli.run("plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    cli.run("sync", check=True)
    again = project_containers(docker_client, project_name)
    assert {n: r["Id"] for n, r in again.items()} == {n: r["Id"] for n, r in running.items()}
    if sample == "angular":
        web = docker_client.api.inspect_container(labels.container_name(project_name, "web"))
        (modules,) = [m for m in web["Mounts"] if m["Destination"] == "/project/node_modules"]
        assert modules["Type"] == "volume"
