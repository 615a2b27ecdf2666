"""private_dir and private_file: 0700 folders and 0600 files whatever the umask."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.object_store import FileStore
from reconciler.backup.backup_target import legacy_target
from reconciler.decide.restore_planning import ArtifactRef
from reconciler.restore.restore_artifacts import fetch_verified, spool_folder
from reconciler.state.files import atomic_write_json, exclusive_lock, private_dir, private_file


@pytest.fixture(autouse=True)
def _open_umask() -> Iterator[None]:
    # The usual umask of a shell: what made 0644 files and 0755 folders before.
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_dir_makes_every_missing_level_0700(tmp_path: Path) -> None:
    private_dir(tmp_path / "a" / "b" / "c")
    for level in ("a", "a/b", "a/b/c"):
        assert _mode(tmp_path / level) == 0o700, level


def test_private_dir_tightens_an_existing_folder_but_not_those_above(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    private_dir(tmp_path / "state")
    assert _mode(tmp_path / "state") == 0o700
    assert _mode(tmp_path) == 0o755


def test_private_dir_can_leave_an_existing_folder_alone(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    private_dir(tmp_path, tighten=False)
    assert _mode(tmp_path) == 0o755


def test_private_dir_never_tightens_a_shared_sticky_folder(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    private_dir(shared)
    assert _mode(shared) == 0o1777


def test_private_file_is_created_0600_even_over_a_stale_0644_file(tmp_path: Path) -> None:
    stale = tmp_path / "f"
    stale.write_text("old")
    os.chmod(stale, 0o644)
    with private_file(stale) as handle:
        # 0600 from the first byte: checked while the file is still open.
        assert _mode(stale) == 0o600
        handle.write(b"new")
    assert stale.read_bytes() == b"new"


def test_state_files_and_locks_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    atomic_write_json(state / "status.json", {"a": 1})
    atomic_write_json(state / "status.json", {"a": 2})  # makes status.json.prev
    with exclusive_lock(state / "pass.lock", wait_s=0, what="pass"):
        pass
    assert _mode(state) == 0o700
    for name in ("status.json", "status.json.prev", "pass.lock"):
        assert _mode(state / name) == 0o600, name


def test_a_file_store_writes_0600_objects_in_0700_folders(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    store = FileStore(root)
    store.put_bytes("prod/20260101T000000Z/db.sql.zst", b"dump")
    assert _mode(root) == 0o700
    assert _mode(root / "prod") == 0o700
    assert _mode(root / "prod" / "20260101T000000Z") == 0o700
    assert _mode(root / "prod" / "20260101T000000Z" / "db.sql.zst") == 0o600


def test_a_file_store_leaves_an_existing_root_as_the_user_made_it(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    FileStore(tmp_path).put_bytes("dev/x", b"x")
    assert _mode(tmp_path) == 0o755
    assert _mode(tmp_path / "dev") == 0o700
    assert _mode(tmp_path / "dev" / "x") == 0o600


def test_the_restore_spool_is_a_0700_folder_of_0600_files(tmp_path: Path) -> None:
    import zstandard

    data = zstandard.ZstdCompressor().compress(b"-- a dump with mysql.user password hashes\n")
    store = FileStore(tmp_path / "backups")
    store.put_bytes("b1/db.sql.zst", data)
    artifact = ArtifactRef(
        kind="database",
        name="db",
        key="b1/db.sql.zst",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    state = tmp_path / "state"
    with spool_folder(state, "r1") as folder:
        kept = fetch_verified(legacy_target(store), artifact, folder)
        assert kept is not None, "the disk has room: the artifact is kept in the spool"
        assert _mode(state) == 0o700
        assert _mode(state / "restore-tmp") == 0o700
        assert _mode(folder) == 0o700
        assert _mode(kept) == 0o600
