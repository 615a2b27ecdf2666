"""A backup killed while it held services stopped: the next holder of the pass lock starts them.

Against the real engine, because the window that matters is the engine's: a
stop asked for by a process that then died goes on, so a container can still
be running when the next pass looks and exit a moment later (issue 15).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler import labels
from reconciler.adapters.stack_control import StoppedRun
from reconciler.backup import stop_journal
from tests.fixtures.docker_engine import remove_project

pytestmark = pytest.mark.integration

BUSYBOX = "reconciler-local/busybox:latest"


@pytest.fixture
def web(docker_client: docker.DockerClient) -> Iterator[Any]:
    """A service container whose process ignores SIGTERM: every stop takes its whole grace."""
    project = "sj" + uuid.uuid4().hex[:8]
    container = docker_client.containers.run(
        BUSYBOX,
        ["sleep", "3600"],
        name=labels.container_name(project, "web"),
        detach=True,
        labels={labels.PROJECT: project, labels.SERVICE: "web"},
    )
    try:
        yield container
    finally:
        remove_project(docker_client, project)


def started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def run_of(container: Any, grace_s: int) -> StoppedRun:
    """What a backup writes down before it stops ``container``."""
    return StoppedRun(str(container.id), str(container.name), started_at(container), grace_s)


def test_a_stop_still_in_flight_is_waited_out_and_the_service_started(
    docker_client: docker.DockerClient, web: Any, tmp_path: Path
) -> None:
    journal = stop_journal.StopJournal(tmp_path)
    journal.about_to_stop(run_of(web, 3))
    before = started_at(web)
    # The killed backup's stop: the engine goes on with it for its 3 s grace.
    stopper = threading.Thread(target=lambda: web.stop(timeout=3))
    stopper.start()
    time.sleep(0.5)
    assert web.client.containers.get(web.id).status == "running"  # what a pass would see

    done = stop_journal.finish_interrupted_stops(docker_client, tmp_path)
    stopper.join()

    assert done == [f"started {web.name} again: a backup that was killed had stopped it"]
    web.reload()
    assert web.status == "running"
    assert started_at(web) != before, "the run the backup was stopping must not survive"
    assert not (tmp_path / stop_journal.JOURNAL).exists()
    time.sleep(3.5)  # past the grace of the old stop: nothing stops it afterwards
    web.reload()
    assert web.status == "running"


def test_a_stopped_service_is_started(
    docker_client: docker.DockerClient, web: Any, tmp_path: Path
) -> None:
    stop_journal.StopJournal(tmp_path).about_to_stop(run_of(web, 1))
    web.stop(timeout=1)
    assert stop_journal.finish_interrupted_stops(docker_client, tmp_path)
    web.reload()
    assert web.status == "running"


def test_a_service_the_backup_started_again_is_left_alone(
    docker_client: docker.DockerClient, web: Any, tmp_path: Path
) -> None:
    stop_journal.StopJournal(tmp_path).about_to_stop(run_of(web, 1))
    web.stop(timeout=1)
    web.start()  # the backup got this far, then died before clearing its journal
    restarted = started_at(web)
    assert stop_journal.finish_interrupted_stops(docker_client, tmp_path) == []
    assert started_at(web) == restarted
    assert not (tmp_path / stop_journal.JOURNAL).exists()


def test_no_journal_no_calls(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    assert stop_journal.finish_interrupted_stops(docker_client, tmp_path) == []
