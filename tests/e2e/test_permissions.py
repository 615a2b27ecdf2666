"""What the reconciler writes on the host is private: a backup to a ``file://`` target
and a restore (with its safety copy) through the real CLI, under the usual umask 022,
leave only 0600 files in 0700 folders in the state folder and the target. Checkouts
are the exception: a service running as a non-root user still reads its bind mounts.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from reconciler.backup.backup_target import open_target
from reconciler.backup.stored_backups import list_backups
from tests.e2e.conftest import make_cli
from tests.e2e.test_restore import BACKUP, Env, compose
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import S3Server
from tests.integration.backup_stack import POPULATE

pytestmark = pytest.mark.integration


@pytest.fixture
def open_umask() -> Iterator[None]:
    # The umask of a usual shell, inherited by the CLI: on main it made 0644/0755.
    old = os.umask(0o022)
    yield
    os.umask(old)


def _stack() -> str:
    data = yaml.safe_load(compose())
    data["services"]["reader"] = {
        "image": "reconciler-local/busybox:latest",
        "user": "1000:1000",
        "command": ["sleep", "100000"],
        "stop_grace_period": "1s",
        "volumes": ["./conf:/conf:ro"],
    }
    return json.dumps(data)  # JSON is YAML


def _not_private(*roots: Path) -> list[str]:
    """Every folder not 0700 and every file not 0600 under ``roots`` (roots included).

    Inside git's own cache (``repo.git``) git picks the modes (0400 objects,
    0700 hooks), and restic its repository's (0400 files, 0700 folders) and its
    cache's: there only "nobody else can read it" is asked.
    """
    wrong: list[str] = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            # Checkouts keep git's modes on purpose: services bind-mount them.
            if Path(folder).name == "checkouts":
                dirs[:] = []
            parts = Path(folder).parts
            tool_modes = "repo.git" in parts or "restic-cache" in parts or _in_restic_repo(folder)
            for path, want in [(Path(folder), 0o700)] + [(Path(folder) / n, 0o600) for n in files]:
                st = path.lstat()
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    continue
                if mode & 0o077 if tool_modes else mode != want:
                    wrong.append(f"{path} {mode:o}")
    return wrong


def _in_restic_repo(folder: str) -> bool:
    """Whether ``folder`` is a restic repository or in one (its ``config`` at the top)."""
    here = Path(folder)
    return any((p / "config").is_file() and (p / "keys").is_dir() for p in (here, *here.parents))


def test_state_file_target_and_safety_copy_are_private_and_bind_mounts_stay_readable(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_env: S3Server,
    s3_bucket: str,
    open_umask: None,
) -> None:
    env = Env(tmp_path, git_daemon, docker_client, project_name, s3_env, s3_bucket)
    target = tmp_path / "backups"
    env.environ["BACKUP_TARGET"] = f"file://{target}"
    env.cli = make_cli(tmp_path, repo_url=git_daemon.url, project=project_name, extra=env.environ)
    git_daemon.commit_files(
        {
            "desired-state/compose.yaml": _stack(),
            "desired-state/backup.yaml": BACKUP,
            "desired-state/restore.yaml": "restores: []\n",
            "desired-state/conf/site.conf": "listen 80\n",
        }
    )
    env.cli.run("sync", check=True)
    env.sh(POPULATE)

    env.cli.run("backup", "run", check=True)
    env.sh("echo changed > /data/after-backup")
    restored = env.cli.run("restore", "latest", "--yes", "--id", "perm")
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert "after-backup" not in env.files()

    state = tmp_path / "state"
    copies = list_backups(open_target(f"file://{target}/pre-restore/perm", env.cli.env))
    assert copies, "the safety copy is in the target's repository"
    assert list((target / "data").rglob("*")), "the repository's packs"
    wrong = _not_private(state, target)
    assert not wrong, "\n".join(wrong)

    # The 0700 folders above a checkout do not keep a non-root service from its
    # bind-mounted files: dockerd (root) resolves the path; the files are 0644.
    reader = env.container("reader")
    assert reader.attrs["Config"]["User"] == "1000:1000"
    result = reader.exec_run(["cat", "/conf/site.conf"])
    assert (result.exit_code, result.output) == (0, b"listen 80\n")
