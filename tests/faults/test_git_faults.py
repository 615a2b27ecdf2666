"""Git faults against real remotes: the server down, the deploy key refused, a force-push.

While a fault lasts, a sync fails (exit 1) and leaves the running containers
as they were: nothing lost, nothing doubled. Once it is gone, the next sync
(or the daemon) converges to the remote's head. A force-push rewrites the
branch to a commit the cache has never seen: the reconciler follows it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.faults.invariants import (
    check_converged,
    check_services,
    check_volumes,
    sync_converges,
    write_sentinels,
)
from tests.faults.table import new_case
from tests.faults.world import World, compose, daemon_converges, web_service
from tests.fixtures.git_remotes import (
    GitWorkRepo,
    ServedRemote,
    SshRemote,
    _free_port,
    _stop_group,
    _wait_listening,
)

pytestmark = pytest.mark.integration

RUNS = 2  # per fault; 2, not 3: the suite stays under 30 min on a new machine (issue 15)
SERVICES = ("web", "api")


def desired(version: int) -> str:
    return compose(
        {name: web_service(version=str(version), volumes={"site": "/data"}) for name in SERVICES},
        ["site"],
    )


class Daemon:
    """A ``git daemon`` that can be stopped and started again on the same port."""

    def __init__(self, repo: GitWorkRepo, log: Path) -> None:
        self.base = repo.remote.parent
        self.log = log
        self.port = _free_port()
        self.url = f"git://127.0.0.1:{self.port}/{repo.remote.name}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    "git",
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    f"--base-path={self.base}",
                    "--listen=127.0.0.1",
                    f"--port={self.port}",
                    str(self.base),
                ],
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        assert _wait_listening(self.port, self.proc), self.log.read_text()

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)


@pytest.fixture
def restartable(tmp_path: Path, git_workrepo: GitWorkRepo) -> Iterator[ServedRemote]:
    daemon = Daemon(git_workrepo, tmp_path / "git-daemon.log")
    daemon.start()
    remote = ServedRemote(url=daemon.url, repo=git_workrepo, stop=daemon.stop)
    remote.start = daemon.start  # type: ignore[attr-defined]
    try:
        yield remote
    finally:
        daemon.stop()


def faulted_sync(world: World, version: int) -> None:
    """A sync during the fault fails, and the running containers stay as they were."""
    result = world.cli.run("sync", timeout=300)
    assert result.returncode == 1, f"sync exited {result.returncode} during the fault"
    status = world.cli.status()
    assert status["reason"] == "SourceUnavailable", status
    check_services(world.client, world.project, SERVICES, environment={"VERSION": str(version)})


def test_git_remote_down(
    tmp_path: Path,
    restartable: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    case = new_case("git_remote_down", RUNS)
    world = World(tmp_path, restartable, docker_client, project_name)
    world.commit({"compose.yaml": desired(0)})
    world.sync()
    sentinels: dict[str, set[str]] = {}
    for run in range(RUNS):
        version = run + 1
        with case.run(run):
            write_sentinels(docker_client, [world.volume("site")], sentinels)
            restartable.stop()
            try:
                head = world.commit({"compose.yaml": desired(version)})
                faulted_sync(world, version - 1)
            finally:
                restartable.start()  # type: ignore[attr-defined]
            expected = {"VERSION": str(version)}
            if run == RUNS - 1:

                def converged(head: str = head, expected: dict[str, str] = expected) -> None:
                    check_converged(world.cli, head)
                    check_services(docker_client, project_name, SERVICES, environment=expected)

                daemon_converges(world, converged)
            else:
                sync_converges(world.cli, head)
            check_services(docker_client, project_name, SERVICES, environment=expected)
            check_volumes(docker_client, sentinels)
    case.assert_clean()


def test_git_deploy_key_refused(
    tmp_path: Path,
    ssh_git_server: SshRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    case = new_case("git_auth_refused", RUNS)
    world = World(
        tmp_path,
        ssh_git_server,
        docker_client,
        project_name,
        extra={
            "RECONCILER_SSH_KEY": str(ssh_git_server.key),
            "RECONCILER_KNOWN_HOSTS": str(ssh_git_server.known_hosts),
        },
    )
    authorized = tmp_path / "ssh" / "authorized_keys"
    granted = authorized.read_text()
    world.commit({"compose.yaml": desired(0)})
    world.sync()
    sentinels: dict[str, set[str]] = {}
    for run in range(RUNS):
        version = run + 1
        with case.run(run):
            write_sentinels(docker_client, [world.volume("site")], sentinels)
            authorized.write_text("")  # the deploy key is revoked on the server
            try:
                head = world.commit({"compose.yaml": desired(version)})
                faulted_sync(world, version - 1)
            finally:
                authorized.write_text(granted)
            sync_converges(world.cli, head)
            check_services(
                docker_client, project_name, SERVICES, environment={"VERSION": str(version)}
            )
            check_volumes(docker_client, sentinels)
    case.assert_clean()


def test_git_force_push(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
) -> None:
    case = new_case("git_force_push", RUNS)
    world = World(tmp_path, git_daemon, docker_client, project_name)
    base = world.commit({"compose.yaml": desired(0)})
    world.sync()
    sentinels: dict[str, set[str]] = {}
    for run in range(RUNS):
        with case.run(run):
            write_sentinels(docker_client, [world.volume("site")], sentinels)
            world.commit({"compose.yaml": desired(100 + run)})
            world.sync()
            # History rewritten: the branch now points at a new commit off ``base``.
            repo = git_daemon.repo
            repo.force_push_to(base)
            version = 200 + run
            repo.write({"desired-state/compose.yaml": desired(version)})
            repo.commit(f"rewritten {run}")
            repo.push(force=True)
            head = repo.head()
            sync_converges(world.cli, head)
            check_services(
                docker_client, project_name, SERVICES, environment={"VERSION": str(version)}
            )
            check_volumes(docker_client, sentinels)
    case.assert_clean()
