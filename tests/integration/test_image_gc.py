"""Image garbage collection on the real engine: old builds go, the previous one stays.

Three deploys that each change a built service's context leave only the
current and the previous image; an image of someone else's is untouched; a
deploy that fails its health check and rolls back removes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from reconciler import labels as lbl
from reconciler.adapters.docker_engine import DockerEngine
from reconciler.deploy.passes import Reconciler
from reconciler.ports import Checkout
from reconciler.settings import load_settings
from tests.fixtures.docker_engine import remove_project

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  app:
    build:
      context: ../app
      args: {{BASE: {base}}}
    command: ["sleep", "300"]
    stop_grace_period: 1s
{extra}"""

FAILING_CHECK = """\
    healthcheck:
      test: ["CMD", "false"]
      interval: 1s
      timeout: 1s
      retries: 1
"""


class FolderSource:
    """Commits as folders (the Source seam); the engine is the real one."""

    def __init__(self, root: Path, base: str) -> None:
        self.root = root
        self.base = base
        self.head = ""
        self.count = 0

    def commit(self, content: str, *, extra: str = "") -> str:
        self.count += 1
        sha = f"{self.count:040x}"
        (self.root / sha / "desired-state").mkdir(parents=True)
        (self.root / sha / "app").mkdir()
        (self.root / sha / "desired-state" / "compose.yaml").write_text(
            COMPOSE.format(base=self.base, extra=extra)
        )
        (self.root / sha / "app" / "Dockerfile").write_text(
            "ARG BASE=scratch\nFROM ${BASE}\nCOPY page.txt /page.txt\n"
        )
        (self.root / sha / "app" / "page.txt").write_text(content)
        self.head = sha
        return sha

    def remote_head(self) -> str:
        return self.head

    def checkout(self, commit: str) -> Checkout:
        return Checkout(commit, self.root / commit)


@pytest.fixture
def built_images(docker_client: docker.DockerClient, project_name: str) -> Iterator[None]:
    yield
    # The containers first (project_name's own clean-up runs after this one):
    # an image a running container uses cannot be removed. Our builds only.
    remove_project(docker_client, project_name)
    api = docker_client.api
    for image in api.images(filters={"label": f"{lbl.IMAGE_PROJECT}={project_name}"}):
        with contextlib.suppress(docker.errors.APIError):
            api.remove_image(image["Id"], force=True)


def ours(client: docker.DockerClient, project: str) -> set[str]:
    found = client.api.images(filters={"label": f"{lbl.IMAGE_PROJECT}={project}"})
    return {str(i["Id"]) for i in found}


def running_image(client: docker.DockerClient, project: str) -> str:
    container = client.api.inspect_container(lbl.container_name(project, "app"))
    return str(container["Image"])


def test_gc_keeps_current_and_previous_and_nothing_after_a_rollback(
    docker_client: docker.DockerClient,
    project_name: str,
    built_images: None,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    unrelated = f"reconciler-test/{project_name}:unrelated"
    docker_client.api.tag(busybox_image, unrelated)
    try:
        settings = load_settings(
            {
                "RECONCILER_REPO": "git://example.invalid/x",
                "RECONCILER_STATE_DIR": str(tmp_path / "state"),
                "RECONCILER_PROJECT": project_name,
                "RECONCILER_ENV_FILE": "/dev/null",
            }
        )
        source = FolderSource(tmp_path / "commits", busybox_image)
        reconciler = Reconciler(
            settings, source=source, engine=DockerEngine(docker_client), own_container=None
        )
        versions: list[str] = []
        for n in range(4):  # the first deploy, then three changes of the context
            source.commit(f"version {n}\n")
            outcome = reconciler.sync()
            assert outcome.ok, outcome.message
            versions.append(running_image(docker_client, project_name))
        assert len(set(versions)) == 4
        assert ours(docker_client, project_name) == {versions[-1], versions[-2]}
        docker_client.api.inspect_image(unrelated)  # untouched
        docker_client.api.inspect_image(busybox_image)

        source.commit("version broken\n", extra=FAILING_CHECK)
        failed = reconciler.sync()
        assert not failed.ok
        assert "rolled back" in failed.message
        assert running_image(docker_client, project_name) == versions[-1]
        left = ours(docker_client, project_name)
        assert {versions[-1], versions[-2]} < left  # the failed build stays too
        assert len(left) == 3
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_image(unrelated)  # the tag only
