"""Backups planted in a ``file://`` target, restored with the real CLI against the real engine.

Whoever can write to the target (a leaked key, a developer PC that writes
``dev/``) can plant a backup: its checksums recomputed, it passes the size and
SHA-256 checks. Issue 10: a manifest whose ``id`` is ``a/../..`` made the
second ``reconciler restore latest --drill`` delete the state folder, one more
``../`` the folder above it; a volume archive reached the engine unfiltered.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import docker
import pytest
import zstandard

from reconciler import labels
from reconciler.adapters.object_store import FileStore
from reconciler.backup.backup_target import legacy_target
from reconciler.backup.stored_backups import read_manifest
from reconciler.model.backup_policy import load_backup_policy
from reconciler.model.loading import load_desired_state
from tests.conftest import TEST_HELPER_IMAGE
from tests.e2e.conftest import Cli, make_cli
from tests.e2e.test_restore import BACKUP, compose
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.legacy_backups import write_legacy_backup
from tests.fixtures.restic_planting import newer_id
from tests.integration.backup_stack import POPULATE, ROOT_PASSWORD, listing

pytestmark = pytest.mark.integration


class World:
    """A deployed stack whose backup target is a ``file://`` folder beside the state."""

    def __init__(
        self, tmp_path: Path, remote: ServedRemote, client: docker.DockerClient, project: str
    ) -> None:
        self.client = client
        self.project = project
        self.remote = remote
        # The state two folders down, so "the folder above it" is ours to watch too.
        self.vm = tmp_path / "host" / "vm"
        self.state = self.vm / "state"
        self.backups = self.vm / "backups"
        self.environ = {
            "DB_ROOT_PASSWORD": ROOT_PASSWORD,
            "BACKUP_TARGET": f"file://{self.backups}",
            "RECONCILER_STATE_DIR": str(self.state),
        }
        self.cli: Cli = make_cli(tmp_path, repo_url=remote.url, project=project, extra=self.environ)
        self.store = FileStore(self.backups)

    def backup(self) -> str:
        root = self.remote.repo.path
        desired = load_desired_state(
            root, directory="desired-state", project=self.project, environ=self.environ
        )
        policy = load_backup_policy(
            root,
            directory="desired-state",
            desired=desired,
            environ=self.environ,
            default_target="file:///nowhere",
        )
        assert policy is not None
        # In the old format (1): these are the cases planted by whoever can write
        # to the store without the key; such backups stay restorable for a while.
        return write_legacy_backup(
            client=self.client,
            store=self.store,
            desired=desired,
            policy=policy,
            image=TEST_HELPER_IMAGE,
        ).id

    def files(self) -> str:
        return listing(self.client, f"{self.project}_site")

    def manifest(self, ident: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(b"".join(self.store.get_stream(f"{ident}/manifest.json")))
        return data

    def newer_id(self, ident: str) -> str:
        """An id one minute after ``ident``: the planted backup becomes ``latest``."""
        return newer_id(ident)

    def plant(self, folder: str, manifest: dict[str, Any]) -> None:
        self.store.put_bytes(f"{folder}/manifest.json", json.dumps(manifest).encode())

    def canaries(self) -> dict[str, str]:
        """Files in the state folder and the two above it, with their contents."""
        watched = [self.state / "status.json", self.vm / "canary", self.vm.parent / "canary"]
        return {str(p): p.read_text() for p in watched if p.exists()}


@pytest.fixture
def world(
    tmp_path: Path, git_daemon: ServedRemote, docker_client: docker.DockerClient, project_name: str
) -> World:
    w = World(tmp_path, git_daemon, docker_client, project_name)
    w.remote.commit_files(
        {
            "desired-state/compose.yaml": compose(),
            "desired-state/backup.yaml": BACKUP,
            "desired-state/restore.yaml": "restores: []\n",
        }
    )
    w.cli.run("sync", check=True)
    container = docker_client.containers.get(labels.container_name(project_name, "web"))
    result = container.exec_run(["sh", "-c", POPULATE])
    assert result.exit_code == 0, result.output
    (w.vm / "canary").write_text("vm folder intact")
    (w.vm.parent / "canary").write_text("host folder intact")
    return w


@pytest.mark.parametrize("planted_id", ["a/../..", "a/../../..", "../../../.."])
def test_a_manifest_id_that_leads_out_is_refused_by_the_drill_and_the_restore(
    world: World, planted_id: str
) -> None:
    real = world.backup()
    manifest = world.manifest(real)
    manifest["id"] = planted_id  # the artifacts' keys still name the real objects: all verify
    folder = world.newer_id(real)
    world.plant(folder, manifest)
    before_files, before = world.files(), world.canaries()
    assert len(before) == 3

    for _ in range(2):  # the second drill was the one that deleted the state folder
        result = world.cli.run("restore", "latest", "--drill", "--json")
        assert result.returncode == 1, result.stdout + result.stderr[-2000:]
        drill = json.loads(result.stdout)
        assert drill["result"] == "failed"
        assert f"backup {folder} in file://{world.backups}" in drill["error"]
        assert "manifest.json is refused" in drill["error"]
        assert world.canaries() == before
        assert (world.state / "drill.json").exists()

    result = world.cli.run("restore", "latest", "--yes")
    assert result.returncode == 1
    assert "manifest.json is refused" in result.stdout + result.stderr
    assert "nothing was overwritten" in result.stdout + result.stderr
    assert world.canaries() == before
    assert world.files() == before_files
    assert not (world.backups / "pre-restore").exists()  # not even a safety copy was taken


def _hostile_archive(real: bytes, extras: list[tarfile.TarInfo]) -> bytes:
    """The real volume archive with more members, written as an attacker would."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(real), mode="r:") as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in source:
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        for extra in extras:
            data = b"planted\n" if extra.isfile() else None
            if data is not None:
                extra.size = len(data)
            tar.addfile(extra, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info


@pytest.mark.parametrize(
    ("extras", "refusal"),
    [
        (
            [_link("./html/passwd", "../../../../etc/passwd")],
            "member './html/passwd' is a symbolic link to '../../../../etc/passwd'",
        ),
        (
            [_link("./html/etc", "/etc")],
            "member './html/etc' is a symbolic link to the absolute path '/etc'",
        ),
        ([tarfile.TarInfo("./../outside.txt")], "member './../outside.txt' is a '..' component"),
        (  # normalised, "self/../etc/passwd" is "etc/passwd": inside, but "self" is the root
            [_link("./self", "."), _link("./html/pw", "../self/../etc/passwd")],
            "member './html/pw' is a symbolic link to '../self/../etc/passwd'",
        ),
        (  # "up" is inside; a file under it is written where it points
            [_link("./up", "html"), tarfile.TarInfo("./up/planted.txt")],
            "member './up/planted.txt' is under 'up', a symbolic link of the archive",
        ),
    ],
    ids=["symlink-out", "absolute-symlink", "dotdot-member", "dot-link-then-up", "under-a-link"],
)
def test_a_volume_archive_with_a_member_that_leads_out_is_refused_before_the_volume_changes(
    world: World, extras: list[tarfile.TarInfo], refusal: str
) -> None:
    real = world.backup()
    manifest = world.manifest(real)
    folder = world.newer_id(real)
    site = next(a for a in manifest["artifacts"] if a["kind"] == "volume")
    packed = b"".join(world.store.get_stream(site["key"]))
    raw = (
        zstandard.ZstdDecompressor()
        .stream_reader(io.BytesIO(packed), read_across_frames=True)
        .read()
    )
    archive = _hostile_archive(raw, extras)
    hostile = zstandard.ZstdCompressor().compress(archive)
    key = f"{folder}/volumes/site.tar.zst"
    world.store.put_bytes(key, hostile)
    site.update(  # recomputed: it passes every size and checksum test
        key=key,
        size=len(hostile),
        sha256=hashlib.sha256(hostile).hexdigest(),
        raw_size=len(archive),
    )
    manifest["id"] = folder
    manifest["artifacts"] = [site]
    world.plant(folder, manifest)
    assert read_manifest(legacy_target(world.store), folder).id == folder  # well-formed
    before = world.files()

    result = world.cli.run("restore", "latest", "--yes")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert refusal in output, output[-3000:]
    assert "volume site" in output
    assert "nothing was overwritten" in output
    assert world.files() == before  # byte for byte (md5 of every file), modes, owners, links
    assert not (world.backups / "pre-restore").exists()
    assert not (world.vm.parent / "outside.txt").exists()

    result = world.cli.run("restore", "latest", "--drill", "--json")
    assert result.returncode == 1
    assert refusal in json.loads(result.stdout)["error"]
    assert world.files() == before
