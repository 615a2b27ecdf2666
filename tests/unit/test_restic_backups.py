"""The restic format's pure parts: the manifest, the listing's checks, the re-pack of a tar."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import pytest

from reconciler.adapters.object_store import FileStore
from reconciler.adapters.restic import Completed
from reconciler.backup import restic_backups
from reconciler.backup.backup_target import BackupTarget, open_target, safety_url
from reconciler.backup.manifests import Artifact, Manifest, id_time
from reconciler.backup.restic_backups import _ChunkStream, _Node, _repacked
from reconciler.errors import ResticBackupError

SNAP = "a" * 64
IDENT = "2026-11-27T05-04-00Z"


def manifest() -> Manifest:
    return Manifest(
        id=IDENT,
        time="2026-11-27T05:04:00+00:00",
        commit="c0ffee",
        host="vm",
        project="site",
        artifacts=(
            Artifact(
                kind="volume",
                name="site",
                key=f"{IDENT}/volumes/site",
                size=10,
                sha256="",
                raw_size=100,
                compression="restic",
                snapshot=SNAP,
                files=3,
            ),
        ),
        duration_s=1.5,
        format_version=2,
    )


def test_a_format_2_manifest_round_trips_and_names_only_snapshots() -> None:
    raw = manifest().to_json()
    data = json.loads(raw)
    assert set(data["artifacts"][0]) == {"kind", "name", "snapshot", "size", "raw_size", "files"}
    assert Manifest.from_json(raw) == manifest()


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"snapshot": "../../etc"}, "snapshot: '../../etc' is not an allowed value"),
        ({"snapshot": "abc"}, "snapshot: 'abc' is not an allowed value"),
        ({"name": "../x"}, "name: '../x' is not an allowed value"),
        ({"key": "x"}, "unknown field(s) key"),
        ({"files": -1}, "files: negative"),
        ({"kind": "file"}, "neither volume nor database"),
    ],
)
def test_a_format_2_artifact_is_checked_field_by_field(
    change: dict[str, Any], refusal: str
) -> None:
    data = json.loads(manifest().to_json())
    data["artifacts"][0].update(change)
    with pytest.raises(ValueError, match=refusal.replace("(", r"\(").replace(")", r"\)")):
        Manifest.from_json(json.dumps(data).encode())


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mtime = 1796172900
    return info


def _repack(raw: bytes, nodes: dict[str, _Node] | None = None) -> list[tarfile.TarInfo]:
    out = io.BytesIO()
    _repacked(io.BytesIO(raw), "volume/site", out, nodes or {})
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:") as tar:
        return tar.getmembers()


def test_the_repack_names_members_relative_to_the_volume_with_exact_times() -> None:
    raw = _tar(
        [
            (_entry("volume/site/a.txt"), b"hi"),
            (_entry("volume/site/sub/", tarfile.DIRTYPE), None),
            (_entry("volume/site/sub/b", tarfile.LNKTYPE, "volume/site/a.txt"), None),
        ]
    )
    nodes = {
        ".": _Node("1796172899.603583935", 0o1755, 33, 33),
        "./a.txt": _Node("1796172899.603583935", 0o644, 0, 0),
    }
    members = _repack(raw, nodes)
    assert [m.name for m in members] == [".", "./a.txt", "./sub", "./sub/b"]
    root, first, _sub, link = members
    assert (root.mode, root.uid, root.gid) == (0o1755, 33, 33)
    assert first.pax_headers["mtime"] == "1796172899.603583935"
    assert link.linkname == "./a.txt"


def test_a_fifo_or_device_restic_dumps_as_an_empty_file_is_repacked_as_what_it_is() -> None:
    raw = _tar([(_entry("volume/site/pipe"), b""), (_entry("volume/site/null"), b"")])
    stamp = "1796172899.603583935"
    nodes = {
        "./pipe": _Node(stamp, 0o644, 0, 0, "fifo"),
        "./null": _Node(stamp, 0o644, 0, 0, "chardev"),
    }
    pipe, null = _repack(raw, nodes)
    assert pipe.isfifo()
    assert null.ischr()


@pytest.mark.parametrize(
    ("member", "refusal"),
    [
        (_entry("etc/passwd"), "outside volume/site/"),
        (_entry("volume/other/x"), "outside volume/site/"),
        (_entry("volume/site/h", tarfile.LNKTYPE, "etc/shadow"), "hard link to 'etc/shadow'"),
    ],
)
def test_the_repack_refuses_what_restic_would_never_write_there(
    member: tarfile.TarInfo, refusal: str
) -> None:
    with pytest.raises(ResticBackupError, match=refusal):
        _repack(_tar([(member, b"x" if member.isreg() else None)]))


def test_a_pax_path_never_brings_the_old_name_back() -> None:
    long = "volume/site/" + "d" * 120 + "/file"  # past ustar's 100 bytes: a pax path
    (member,) = _repack(_tar([(_entry(long), b"x")]))
    assert member.name == "./" + "d" * 120 + "/file"


def test_go_times_become_pax_times_to_the_nanosecond() -> None:
    assert restic_backups._pax_time("2026-12-02T00:54:59.603583935Z") == "1796172899.603583935"
    assert restic_backups._pax_time("2026-12-02T01:54:59.5+01:00") == "1796172899.500000000"
    assert restic_backups._pax_time("2026-12-02T00:54:59Z") == "1796172899.000000000"
    assert restic_backups._pax_time("yesterday") is None


def test_a_dump_that_breaks_ends_the_feed_and_keeps_its_error() -> None:
    def chunks() -> Any:
        yield b"-- MariaDB dump\n"
        raise RuntimeError("lost connection")

    stream = _ChunkStream(chunks())
    assert stream.read(4) == b"-- M"
    assert stream.read() == b"ariaDB dump\n"
    assert stream.read() == b""  # restic sees the end; the caller raises the kept error
    assert isinstance(stream.error, RuntimeError)


class ListingRunner:
    """restic answering ``snapshots --json`` with the given snapshots."""

    def __init__(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = snapshots

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout_s: float,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> Completed:
        assert args[0] == "snapshots"
        return Completed(0, [json.dumps(self.snapshots)], "")


def _snapshot(n: int, *tags: str) -> dict[str, Any]:
    return {
        "id": f"{n:x}" * 64,
        "short_id": f"{n:x}" * 8,
        "time": "2026-11-27T05:04:00.123456789Z",
        "tree": "b" * 64,
        "paths": ["/volume/site"],
        "hostname": "site",
        "tags": list(tags),
    }


def test_the_listing_groups_by_backup_and_skips_what_is_not_ours(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = ListingRunner(
        [
            _snapshot(1, "reconciler", f"backup={IDENT}", "part=volume:site"),
            _snapshot(2, "reconciler", f"backup={IDENT}", "manifest", "size=1234"),
            _snapshot(3, "reconciler", "backup=2026-11-28T05-04-00Z", "part=volume:site"),
            _snapshot(4, "reconciler", "backup=a/../..", "manifest"),  # not an id
            _snapshot(5, "reconciler", f"backup={IDENT}", "backup=2026-01-01T00-00-00Z"),
        ]
    )
    target = BackupTarget(
        url=f"file://{tmp_path}", store=FileStore(tmp_path), env={"RECONCILER_BACKUP_KEY": "k"}
    )
    monkeypatch.setattr(target, "repository", lambda runner_=None: _repo(runner))
    found = {b.id: b for b in restic_backups.stored_backups(target, id_time)}
    assert set(found) == {IDENT, "2026-11-28T05-04-00Z"}
    assert found[IDENT].complete is True
    assert found[IDENT].size == 1234
    assert len(found[IDENT].snapshots) == 2
    assert found["2026-11-28T05-04-00Z"].complete is False


def _repo(runner: ListingRunner) -> Any:
    from reconciler.adapters.restic import Repository

    return Repository("file:///r", key="k", env={}, runner=runner)


def test_a_safety_copy_url_opens_the_target_repository_narrowed_to_its_request(
    tmp_path: Any,
) -> None:
    target = open_target(f"file://{tmp_path}/prod/pre-restore/r1", {})
    assert target.repository_url == f"file://{tmp_path}/prod"
    assert target.safety_copy == "r1"
    assert target.tags == ["safety-copy=r1"]
    assert target.local_path == f"{tmp_path}/prod"
    # Not under pre-restore/, or not a request id there: an ordinary target.
    for url in (f"file://{tmp_path}/prod", f"file://{tmp_path}/pre-restore/-x"):
        plain = open_target(url, {})
        assert plain.safety_copy is None
        assert plain.repository_url == url
    assert safety_url(f"file://{tmp_path}/prod/", "r1") == f"file://{tmp_path}/prod/pre-restore/r1"


def test_a_target_never_lists_a_safety_copy_and_a_safety_url_only_its_own(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = "2026-11-28T05-04-00Z"
    runner = ListingRunner(
        [
            _snapshot(1, "reconciler", f"backup={IDENT}", "part=volume:site"),
            _snapshot(2, "reconciler", f"backup={IDENT}", "manifest", "size=1"),
            _snapshot(3, "reconciler", f"backup={later}", "manifest", "safety-copy=r1"),
            _snapshot(4, "reconciler", f"backup={later}", "part=volume:site", "safety-copy=r1"),
            _snapshot(5, "reconciler", f"backup={later}", "manifest", "safety-copy=r2"),
            # Two requests' tags: neither request's, and not the target's.
            _snapshot(6, "reconciler", f"backup={later}", "safety-copy=r1", "safety-copy=r2"),
        ]
    )

    def listed(url: str) -> dict[str, restic_backups.StoredBackup]:
        target = open_target(url, {"RECONCILER_BACKUP_KEY": "k"})
        monkeypatch.setattr(target, "repository", lambda runner_=None: _repo(runner))
        return {b.id: b for b in restic_backups.stored_backups(target, id_time)}

    own = listed(f"file://{tmp_path}")
    assert set(own) == {IDENT}
    assert len(own[IDENT].snapshots) == 2
    copies = listed(f"file://{tmp_path}/pre-restore/r1")
    assert set(copies) == {later}
    assert copies[later].complete is True
    assert len(copies[later].snapshots) == 2
    assert set(listed(f"file://{tmp_path}/pre-restore/r3")) == set()
