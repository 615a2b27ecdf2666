"""Pulled images on the real engine and a real registry: recorded when pulled, collected later.

A registry on 127.0.0.1 (tests/fixtures/registry.py) serves images the test
pushed and then removed locally, so every deploy's image is really pulled by
``DockerEngine.ensure_image``: no record is written by hand. Three deploys
(v1, v2, v3) leave v2 as the previous version and v3 as the current one, and
remove v1; an image the user tagged, and one the user pulled before the
reconciler needed it, are never touched.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from reconciler import labels as lbl
from reconciler.adapters.docker_engine import DockerEngine
from reconciler.deploy.collecting import IMAGES_FILE
from reconciler.deploy.passes import Reconciler
from reconciler.errors import ImageUnavailable
from reconciler.model.desired import ServiceSpec
from reconciler.ports import ALREADY_GONE, Checkout
from reconciler.settings import load_settings
from tests.fixtures.docker_engine import remove_project
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  app:
    image: {image}
    command: ["sleep", "300"]
    stop_grace_period: 1s
"""


class FolderSource:
    """Commits as folders (the Source seam); the engine is the real one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.head = ""
        self.count = 0

    def commit(self, image: str) -> str:
        self.count += 1
        sha = f"{self.count:040x}"
        (self.root / sha / "desired-state").mkdir(parents=True)
        (self.root / sha / "desired-state" / "compose.yaml").write_text(COMPOSE.format(image=image))
        self.head = sha
        return sha

    def remote_head(self) -> str:
        return self.head

    def checkout(self, commit: str) -> Checkout:
        return Checkout(commit, self.root / commit)


@pytest.fixture
def repository(
    docker_client: docker.DockerClient, project_name: str, local_registry: Registry
) -> Iterator[str]:
    """``<registry>/reconciler-test-pulled-<project>``; its images removed afterwards."""
    name = f"{local_registry.host}/reconciler-test-pulled-{project_name}"
    yield name
    remove_project(docker_client, project_name)  # containers hold their images
    api = docker_client.api
    # By tag, never by id: one of them names the shared busybox image too.
    for image in api.images(name=name):
        for tag in image.get("RepoTags") or ():
            if tag.startswith(f"{name}:"):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_image(tag)


def present(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.api.inspect_image(image_id)
    except docker.errors.NotFound:
        return False
    return True


def running_image(client: docker.DockerClient, project: str) -> str:
    return str(client.api.inspect_container(lbl.container_name(project, "app"))["Image"])


def test_ensure_image_reports_what_a_pull_brought_and_nothing_else(
    docker_client: docker.DockerClient,
    busybox_image: str,
    local_registry: Registry,
    repository: str,
) -> None:
    engine = DockerEngine(docker_client)
    image_id = local_registry.publish(docker_client, busybox_image, f"{repository}:v1", "a")
    service = ServiceSpec(name="app", image=f"{repository}:v1")

    pulled = engine.ensure_image(service)
    assert pulled is not None
    assert (pulled.image_id, pulled.reference, pulled.tags) == (
        image_id,
        f"{repository}:v1",
        (f"{repository}:v1",),
    )
    assert engine.ensure_image(service) is None  # present now: no pull, nothing to report

    # A pull that fails (the registry has no such tag) reports nothing: it raises.
    with pytest.raises(ImageUnavailable, match="cannot be pulled"):
        engine.ensure_image(ServiceSpec(name="app", image=f"{repository}:absent"))

    # The registry's image is one the engine had under another name: the pull
    # reports that tag too, so the pass does not take the image as its own.
    docker_client.api.tag(busybox_image, repository, "same-as-busybox")
    for _chunk in docker_client.api.push(
        repository, tag="same-as-busybox", stream=True, decode=True
    ):
        pass
    docker_client.api.remove_image(f"{repository}:same-as-busybox")
    again = engine.ensure_image(ServiceSpec(name="app", image=f"{repository}:same-as-busybox"))
    assert again is not None
    assert busybox_image in again.tags


def test_pulled_images_gc_keeps_current_and_previous_and_the_users_images(
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
    local_registry: Registry,
    repository: str,
    tmp_path: Path,
) -> None:
    api = docker_client.api
    ids = {
        n: local_registry.publish(docker_client, busybox_image, f"{repository}:v{n}", f"v{n}")
        for n in (0, 1, 2, 3)
    }
    # The user pulled v0 by hand (and it is not what any commit names): theirs.
    for _chunk in api.pull(repository, tag="v0", stream=True, decode=True):
        pass
    unrelated = f"reconciler-test/{project_name}:unrelated"
    api.tag(busybox_image, unrelated)
    try:
        state = tmp_path / "state"
        settings = load_settings(
            {
                "RECONCILER_REPO": "git://example.invalid/x",
                "RECONCILER_STATE_DIR": str(state),
                "RECONCILER_PROJECT": project_name,
                "RECONCILER_ENV_FILE": "/dev/null",
            }
        )
        source = FolderSource(tmp_path / "commits")
        reconciler = Reconciler(
            settings, source=source, engine=DockerEngine(docker_client), own_container=None
        )
        for n in (1, 2, 3):
            assert not present(docker_client, ids[n])  # so the deploy pulls it
            source.commit(f"{repository}:v{n}")
            outcome = reconciler.sync()
            assert outcome.ok, outcome.message
            assert running_image(docker_client, project_name) == ids[n]

        assert not present(docker_client, ids[1])  # pulled, then no longer needed
        assert present(docker_client, ids[2])  # the previous version, for rollback
        assert present(docker_client, ids[3])  # current
        assert present(docker_client, ids[0])  # the user's pull
        api.inspect_image(unrelated)
        api.inspect_image(busybox_image)
        document = json.loads((state / IMAGES_FILE).read_text())
        assert document[project_name]["app"] == {"current": ids[3], "previous": ids[2]}
        assert set(document[project_name]["@pulled"]) == {ids[2], ids[3]}
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_image(unrelated)  # the tag only


def test_removing_a_pulled_image_by_tag_never_takes_the_image_the_tag_moved_to(
    docker_client: docker.DockerClient,
    busybox_image: str,
    local_registry: Registry,
    repository: str,
) -> None:
    engine = DockerEngine(docker_client)
    api = docker_client.api
    reference = f"{repository}:moved"
    old = local_registry.publish(docker_client, busybox_image, reference, "old")
    pulled = engine.ensure_image(ServiceSpec(name="app", image=reference))
    assert pulled is not None
    assert pulled.image_id == old
    # Someone pulls or tags the reference anew: it now names another image,
    # and the one we pulled is left without a tag.
    newer, _logs = docker_client.images.build(
        fileobj=io.BytesIO(f'FROM {busybox_image}\nLABEL mark="{reference}"\n'.encode()), rm=True
    )
    api.tag(newer.id, repository, "moved")

    assert engine.remove_image(old, by_tags=(reference,)) is None
    assert not present(docker_client, old)
    assert api.inspect_image(reference)["Id"] == newer.id  # untouched
    assert engine.remove_image(old, by_tags=(reference,)) == ALREADY_GONE
