"""The restic adapter against real restic: moto's S3 over HTTP and a file:// target.

Each test makes its own repository (a new bucket, or a folder in tmp_path).
The last test runs restic in a helper container on the real engine, on a
small image made of the local Debian base and the host's restic binary (the
reconciler's image carries Debian's restic too; building it here would cost
minutes of a shared machine for the same binary).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import docker.errors
import pytest

from reconciler import labels
from reconciler.adapters.restic import Repository, Retention
from reconciler.adapters.restic_helper import HelperRunner, iter_helpers, volume_path
from reconciler.adapters.volume_archive import write_volume
from reconciler.errors import IntegrityError, RepositoryNotFound, Unavailable, WrongKey
from tests.fixtures.s3_server import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed"),
]

KEY = "correct horse battery staple " + "x" * 8
HOST = "vm"
DEBIAN = "reconciler-local/debian:bookworm"


@pytest.fixture(params=["file", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/repo"
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/prod"


def repo_at(target: str, tmp_path: Path, key: str = KEY) -> Repository:
    return Repository(target, key=key, cache_dir=str(tmp_path / "cache"), timeout_s=300)


@pytest.fixture
def repo(target: str, tmp_path: Path) -> Repository:
    repository = repo_at(target, tmp_path)
    assert repository.ensure() is True
    return repository


def make_site(root: Path, files: int = 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        folder = root / f"d{i % 4}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i}.txt").write_text(f"page {i}\n" * (200 + i))
    (root / "media.bin").write_bytes(os.urandom(256 * 1024))
    return root


def test_ensure_makes_the_repository_once_and_a_wrong_key_is_a_clear_error(
    repo: Repository, target: str, tmp_path: Path
) -> None:
    assert repo.ensure() is False  # opened, not made again
    wrong = repo_at(target, tmp_path, key="not the key")

    with pytest.raises(WrongKey) as caught:
        wrong.ensure()  # never read as "absent": no second init over it

    message = str(caught.value)
    assert target in message
    assert "RECONCILER_BACKUP_KEY" in message
    assert "not the key" not in message
    assert KEY not in message
    assert repo.snapshots() == []


def test_absent_and_unreachable_are_told_apart(
    tmp_path: Path, s3_env: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RepositoryNotFound):
        repo_at(f"file://{tmp_path}/none", tmp_path).snapshots()

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://user:pw@127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable) as caught:
        repo_at("s3://no-server-here/prod", tmp_path).ensure()
    assert "user:pw" not in str(caught.value)


def test_backup_of_a_folder_and_of_unchanged_data(repo: Repository, tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    progress: list[float] = []

    first = repo.backup_folder(
        str(site), tags=["site"], host=HOST, on_progress=lambda p: progress.append(p.percent_done)
    )
    second = repo.backup_folder(str(site), tags=["site"], host=HOST)

    assert first.files_new == 41
    assert first.data_added > 100_000
    assert progress, "restic's status lines reach the callback"
    assert second.files_unmodified == 41
    assert second.files_new == second.files_changed == 0
    assert second.data_added < 2_000  # a changed snapshot tree at most
    ids = [s.id for s in repo.snapshots(tags=["site"])]
    assert ids[0].startswith(second.snapshot_id)
    assert ids[1].startswith(first.snapshot_id)


def test_backup_from_stdin_and_dump_of_that_file(repo: Repository, tmp_path: Path) -> None:
    dump = b"CREATE TABLE t (id int);\n" + b"INSERT INTO t VALUES (1);\n" * 20_000

    summary = repo.backup_stdin(io.BytesIO(dump), filename="db.sql", tags=["db"], host=HOST)
    out = io.BytesIO()
    repo.dump(summary.snapshot_id, "/db.sql", out)

    assert out.getvalue() == dump
    (snapshot,) = repo.snapshots(tags=["db"])
    assert snapshot.paths == ("/db.sql",)
    assert snapshot.tags == ("db",)


def test_snapshots_newest_first_and_retention_keeps_the_young_and_the_last_three(
    repo: Repository, tmp_path: Path
) -> None:
    site = make_site(tmp_path / "site", files=3)
    now = datetime.now(UTC)
    # Made out of order: 40..36 days ago, then two today.
    for days in (38, 40, 36, 39, 37):
        repo.backup_folder(str(site), host=HOST, time=now - timedelta(days=days))
    today = [repo.backup_folder(str(site), host=HOST).snapshot_id for _ in range(2)]

    listed = repo.snapshots()
    assert [s.time for s in listed] == sorted((s.time for s in listed), reverse=True)
    assert len(listed) == 7

    result = repo.forget(Retention(daily=1, weekly=0, monthly=0))

    left = repo.snapshots()
    # Both of today (within 1d, even with keep-daily 1) and the one of 36 days
    # ago (one of the last three); the four older ones go.
    assert len(left) == 3
    assert len(result.removed) == 4
    assert {s.id[:8] for s in left[:2]} == set(today)
    assert (now - left[2].time).days == 36


def test_check_reads_the_data_and_finds_a_flipped_byte(tmp_path: Path) -> None:
    repo = repo_at(f"file://{tmp_path}/repo", tmp_path)
    repo.ensure()
    repo.backup_folder(str(make_site(tmp_path / "site")), host=HOST)
    repo.check(read_data=True)
    repo.check(subset="50%")

    pack = max((tmp_path / "repo" / "data").rglob("*"), key=lambda p: p.stat().st_size)
    pack.chmod(0o600)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))

    repo.check()  # structure only: the damage is inside a pack
    with pytest.raises(IntegrityError) as caught:
        repo.check(read_data=True)
    assert str(tmp_path / "repo") in str(caught.value)


def test_restore_of_one_path(repo: Repository, tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    summary = repo.backup_folder(str(site), host=HOST)
    out = tmp_path / "out"

    repo.restore(summary.snapshot_id, target=out, include=[f"{site}/d1/f1.txt"])

    restored = [p for p in out.rglob("*") if p.is_file()]
    assert [p.relative_to(out) for p in restored] == [Path(str(site).lstrip("/")) / "d1/f1.txt"]
    assert restored[0].read_bytes() == (site / "d1/f1.txt").read_bytes()


def test_key_rotation(tmp_path: Path) -> None:
    target = f"file://{tmp_path}/repo"
    old = repo_at(target, tmp_path)
    old.ensure()
    old.add_key("the new key")
    new = repo_at(target, tmp_path, key="the new key")
    (old_key,) = [k for k in new.list_keys() if not k.current]

    new.remove_key(old_key.id)

    assert len(new.list_keys()) == 1
    with pytest.raises(WrongKey):
        old.snapshots()


# --- the helper container on the real engine -----------------------------------------------


@pytest.fixture(scope="module")
def restic_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    try:
        docker_client.images.get(DEBIAN)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{DEBIAN} is missing: run images/local/build-base-images.sh", pytrace=False)
    context = tmp_path_factory.mktemp("restic-image")
    shutil.copy(shutil.which("restic") or "restic", context / "restic")
    (context / "Dockerfile").write_text(f"FROM {DEBIAN}\nCOPY restic /usr/bin/restic\n")
    tag = f"reconciler-test-restic-{secrets.token_hex(4)}:latest"
    subprocess.run(
        ["docker", "build", "-q", "--label", "dev.reconciler.test=restic", "-t", tag, str(context)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield tag
    docker_client.images.remove(tag, force=True)


def fill_volume(client: docker.DockerClient, volume: str, project: str, files: int) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i in range(files):
            data = (f"file {i}\n" * 500).encode() + os.urandom(2048)
            info = tarfile.TarInfo(f"./html/f{i}.php")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    write_volume(client, volume=volume, image=DEBIAN, project=project, chunks=[buffer.getvalue()])


def test_a_volume_through_the_helper_with_the_cache_kept(
    docker_client: docker.DockerClient,
    project_name: str,
    restic_image: str,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    volume = f"{project_name}_site"
    cache = f"{project_name}-restic-cache"
    docker_client.volumes.create(volume, labels={labels.PROJECT: project_name})
    fill_volume(docker_client, volume, project_name, files=30)
    runner = HelperRunner(
        docker_client,
        image=restic_image,
        project=project_name,
        volumes=[volume],
        cache_volume=cache,
        network_mode="host",  # moto listens on the host's loopback
    )
    repo = Repository(f"s3://{s3_bucket}/prod", key=KEY, runner=runner, timeout_s=300)
    assert repo.ensure() is True

    first = repo.backup_folder(volume_path(volume), tags=["site"], host=HOST)
    cache_labels = docker_client.volumes.get(cache).attrs["Labels"]
    second = repo.backup_folder(volume_path(volume), tags=["site"], host=HOST)

    assert first.files_new == 30
    assert second.files_unmodified == 30
    assert second.data_added < 2_000
    assert cache_labels.get(labels.PROJECT) == project_name
    assert labels.HELPER not in cache_labels
    (newest, _) = repo.snapshots()
    assert newest.paths == (f"/volume/{volume}",)
    assert list(iter_helpers(docker_client, project_name)) == []  # every helper removed
    # The same repository read locally, as a user would with restic alone.
    local = repo_at(f"s3://{s3_bucket}/prod", tmp_path)
    out = io.BytesIO()
    local.dump(newest.id, f"/volume/{volume}/html/f3.php", out)
    assert out.getvalue().startswith(b"file 3\n")
