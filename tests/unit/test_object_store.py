"""Object store pieces that need no server: part sizes, the file store, target URLs, manifests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.object_store import (
    MAX_PARTS,
    FileStore,
    S3Store,
    max_stream_size,
    open_store,
    part_size,
)
from reconciler.backup.backup_target import legacy_target
from reconciler.backup.manifests import Artifact, Manifest, backup_id, id_time
from reconciler.errors import ObjectNotFound, StoreError

MiB = 1024 * 1024
GiB = 1024 * MiB


def test_part_size_starts_small_and_grows_with_the_part_count() -> None:
    assert part_size(1) == 8 * MiB
    assert part_size(2000) == 8 * MiB
    assert part_size(2001) == 16 * MiB
    assert part_size(4001) == 32 * MiB
    assert part_size(MAX_PARTS) == 128 * MiB
    sizes = [part_size(n) for n in range(1, MAX_PARTS + 1)]
    assert sizes == sorted(sizes)
    # S3: every part but the last at least 5 MiB, none above 5 GiB ...
    assert min(sizes) >= 5 * MiB
    assert max(sizes) <= 5 * GiB
    # ... and 10,000 parts carry more than any one volume of a small VM.
    assert max_stream_size() > 480 * GiB


@pytest.mark.parametrize(
    ("size", "parts_at_most", "largest_part"),
    [(1 * GiB, 128, 8 * MiB), (100 * GiB, 6_000, 32 * MiB), (400 * GiB, 9_400, 128 * MiB)],
)
def test_realistic_sizes_stay_within_the_part_limit(
    size: int, parts_at_most: int, largest_part: int
) -> None:
    total, count = 0, 0
    while total < size:
        count += 1
        total += part_size(count)
    assert count <= parts_at_most
    # Memory follows the biggest part in flight at that size.
    assert part_size(count) == largest_part


def test_open_store_targets(tmp_path: Path) -> None:
    s3 = open_store("s3://bucket-name/prod/site")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == ("bucket-name", "prod/site")
    assert s3.url == "s3://bucket-name/prod/site"
    local = open_store(f"file://{tmp_path}")
    assert isinstance(local, FileStore)
    for bad in ("s3://", "file://relative", "ftp://x/y"):
        with pytest.raises(StoreError) as caught:
            open_store(bad)
        assert caught.value.reason == "invalid-target"


def test_file_store_round_trip(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "backups")
    assert store.list() == []
    size = store.put_stream("2026-11-27T05-04-00Z/volumes/site.tar.zst", iter([b"ab", b"cd"]))
    assert size == 4
    store.put_bytes("2026-11-27T05-04-00Z/manifest.json", b"{}")
    assert [(o.key, o.size) for o in store.list()] == [
        ("2026-11-27T05-04-00Z/manifest.json", 2),
        ("2026-11-27T05-04-00Z/volumes/site.tar.zst", 4),
    ]
    assert b"".join(store.get_stream("2026-11-27T05-04-00Z/volumes/site.tar.zst")) == b"abcd"
    with pytest.raises(ObjectNotFound):
        list(store.get_stream("nope"))
    store.delete([o.key for o in store.list()])
    assert store.list() == []
    assert not (tmp_path / "backups" / "2026-11-27T05-04-00Z").exists()


def test_file_store_leaves_nothing_when_the_stream_fails(tmp_path: Path) -> None:
    store = FileStore(tmp_path)

    def broken() -> object:
        yield b"partial"
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        store.put_stream("b/x.tar.zst", broken())  # type: ignore[arg-type]
    assert store.list() == []
    assert [p.name for p in (tmp_path / "b").iterdir()] == []


def test_file_store_keys_stay_inside(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        FileStore(tmp_path / "t").put_bytes("../escape", b"x")


def test_backup_ids_are_utc_times() -> None:
    from datetime import datetime, timedelta, timezone

    local = datetime(2026, 11, 27, 7, 4, 0, tzinfo=timezone(timedelta(hours=2)))
    assert backup_id(local) == "2026-11-27T05-04-00Z"
    assert id_time("2026-11-27T05-04-00Z") == local
    assert id_time("pre-restore") is None


def test_manifest_json_round_trip_and_version_check() -> None:
    manifest = Manifest(
        id="2026-11-27T05-04-00Z",
        time="2026-11-27T05:04:00+00:00",
        commit="abc123",
        host="vm1",
        project="shop",
        artifacts=(
            Artifact(
                "volume", "site", "2026-11-27T05-04-00Z/volumes/site.tar.zst", 10, "0" * 64, 30
            ),
            Artifact(
                "database",
                "db",
                "2026-11-27T05-04-00Z/databases/db.sql.zst",
                5,
                "1" * 64,
                9,
                format="sql",
            ),
        ),
        duration_s=1.5,
    )
    raw = manifest.to_json()
    assert Manifest.from_json(raw) == manifest
    assert manifest.size == 15
    assert b'"format_version": 1' in raw
    with pytest.raises(ValueError, match="upgrade the reconciler"):
        Manifest.from_json(raw.replace(b'"format_version": 1', b'"format_version": 3'))


def _planted(**changes: Any) -> bytes:
    data: dict[str, Any] = {
        "id": "2026-11-27T05-04-00Z",
        "time": "2026-11-27T05:04:00+00:00",
        "commit": "abc123",
        "host": "vm1",
        "project": "shop",
        "duration_s": 1.5,
        "format_version": 1,
        "artifacts": [
            {
                "kind": "volume",
                "name": "site",
                "key": "2026-11-27T05-04-00Z/volumes/site.tar.zst",
                "size": 10,
                "sha256": "0" * 64,
                "raw_size": 30,
                "compression": "zstd",
                "format": "tar",
            }
        ],
    }
    for path, value in changes.items():
        if path.startswith("a_"):
            data["artifacts"][0][path[2:]] = value
        else:
            data[path] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "../../x"}, "id: '../../x' is not an allowed value"),
        ({"project": "a/b"}, "project: 'a/b' is not an allowed value"),
        ({"host": "vm1\n"}, "host:"),
        ({"time": "yesterday"}, "time: 'yesterday' is not an ISO 8601 time"),
        ({"extra": 1}, "unknown field(s) extra"),
        ({"a_name": ".."}, "artifacts[0]: name: '..' is not an allowed value"),
        ({"a_key": "2026-11-27T05-04-00Z/volumes/../../x"}, "artifacts[0]: key:"),
        ({"a_kind": "device"}, "neither volume nor database"),
        ({"a_size": -1}, "artifacts[0]: size: negative"),
        ({"a_size": True}, "artifacts[0]: size: missing or not a int"),
        ({"a_sha256": "zz"}, "artifacts[0]: sha256:"),
        ({"a_compression": "gzip"}, "only zstd"),
        ({"a_format": "sql"}, "a volume artifact is tar"),
        ({"a_mode": "0777"}, "artifacts[0]: unknown field(s) mode"),
        ({"artifacts": "x"}, "artifacts: not a list"),
    ],
)
def test_a_manifest_from_the_store_is_checked_field_by_field(
    changes: dict[str, Any], message: str
) -> None:
    assert Manifest.from_json(_planted())  # the unchanged one reads
    with pytest.raises(ValueError, match=re.escape(message)):
        Manifest.from_json(_planted(**changes))


def test_an_artifact_listed_twice_is_refused() -> None:
    data = json.loads(_planted())
    data["artifacts"].append(dict(data["artifacts"][0]))
    with pytest.raises(ValueError, match="volume site is listed twice"):
        Manifest.from_json(json.dumps(data).encode())


@pytest.mark.parametrize("ident", ["../x", "a/../..", "2026-11-27T05-04-00Z/..", ""])
def test_a_backup_id_is_checked_before_it_names_a_key(tmp_path: Path, ident: str) -> None:
    from reconciler.backup.stored_backups import read_manifest
    from reconciler.errors import VerifyError

    store = FileStore(tmp_path / "backups")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_bytes(_planted())
    with pytest.raises(VerifyError, match="is not a backup id like 2026-11-27T05-04-00Z"):
        read_manifest(legacy_target(store), ident)


def test_a_spool_folder_never_leads_out_of_restore_tmp(tmp_path: Path) -> None:
    from reconciler.errors import VerifyError
    from reconciler.restore.restore_artifacts import contained, spool_folder

    state = tmp_path / "state"
    (state / "restore-tmp").mkdir(parents=True)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "f").write_text("kept")
    # A link planted where the spool folder goes: resolved, it leads out.
    (state / "restore-tmp" / "r1").symlink_to(tmp_path / "precious")
    for name in ("r1", "drill-a/../..", "..", "."):
        with pytest.raises(VerifyError, match="refused"), spool_folder(state, name):
            pass
    assert (tmp_path / "precious" / "f").read_text() == "kept"
    with pytest.raises(VerifyError, match="cannot name a file or folder"):
        contained(state, "../x")
    with spool_folder(state, "r2") as folder:
        assert folder == state / "restore-tmp" / "r2"
    assert not folder.exists()


def test_a_safety_copy_id_is_checked_before_it_names_a_prefix() -> None:
    from reconciler.backup.backup_target import safety_url
    from reconciler.errors import ReconcilerError

    assert safety_url("file:///b/", "r1") == "file:///b/pre-restore/r1"
    with pytest.raises(ReconcilerError, match="cannot name a safety copy"):
        safety_url("file:///b", "../../etc")
