"""The state folder full: a small tmpfs as RECONCILER_STATE_DIR (the light stack of
state_world.py), from nothing to a few status files' worth left."""

from __future__ import annotations

import contextlib
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.faults.invariants import check_backups, write_sentinels
from tests.faults.state_world import light_world
from tests.faults.table import new_case
from tests.faults.world import World
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import S3Server

pytestmark = pytest.mark.integration

RUNS = 2  # 2, not 3: the suite stays under 30 min on a new machine (issue 15)
TMPFS_SIZE = "8m"


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path, leave: int) -> Path:
    """Fill the file system of ``path`` but ``leave`` bytes; the filler file to remove."""
    filler = path / "filler"
    try:
        out = filler.open("wb")
    except OSError:
        return filler  # full already: not even a new file fits
    with out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    with filler.open("r+b") as resize:
        size = resize.seek(0, 2)
        resize.truncate(max(0, size - leave))
    return filler


def test_state_folder_full(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_env: S3Server,
    s3_bucket: str,
    fault_rng: random.Random,
) -> None:
    case = new_case("state_folder_full", RUNS)
    # The state folder here is an 8 MB tmpfs: too small, by design of the case,
    # for the verified copy a restore spools (its artifacts plus 64 MB of
    # headroom). A VM with a small state disk points the spool elsewhere the same way.
    world = World(
        tmp_path,
        git_daemon,
        docker_client,
        project_name,
        bucket=s3_bucket,
        s3_endpoint=s3_env.url,
        extra={"RECONCILER_SPOOL_DIR": str(tmp_path / "spool")},
    )
    verified: set[str] = set()
    with tmpfs(world.state_dir):
        light = light_world(world)
        for run in range(RUNS):
            with case.run(run):
                write_sentinels(docker_client, [world.volume("site")], light.sentinels)
                head = light.change(request=f"full{run}")
                # Anywhere from nothing to a few status files' worth left.
                filler = fill(world.state_dir, fault_rng.randint(0, 16 * 1024))
                try:
                    failed = light.run("sync")
                    backup = light.run("backup", "run")
                    status = world.cli.run("status", "--json")
                    assert status.returncode == 0, f"status with a full disk: {status.stderr}"
                finally:
                    filler.unlink(missing_ok=True)
                case.note(f"run {run}: sync exited {failed.returncode}, backup {backup.returncode}")
                light.check(head, verified)
                assert light.run("backup", "run").returncode == 0
                check_backups(world.cli, verified)
    case.assert_clean()
