"""The pure parts of a restore's order: room, the error after writing, what stays stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from reconciler.adapters.object_store import open_store
from reconciler.backup.backup_target import legacy_target
from reconciler.decide.restore_planning import ArtifactRef
from reconciler.errors import VerifyError
from reconciler.restore.restore_artifacts import (
    SPOOL_HEADROOM,
    decompressed,
    fetch_verified,
    room_needed,
    room_problem,
)
from reconciler.restore.restore_pass import left_stopped
from reconciler.restore.restoring import failed_after_writing


def ref(size: int, raw_size: int | None = None) -> ArtifactRef:
    return ArtifactRef("volume", "site", "b1/volumes/site.tar.zst", size, "0" * 64, raw_size)


def test_room_is_the_stored_sizes_plus_headroom() -> None:
    assert room_needed([ref(3_000_000), ref(2_000_000)]) == 5_000_000 + SPOOL_HEADROOM


def test_no_room_says_how_much_where_and_how_to_fix() -> None:
    folder = Path("/var/lib/reconciler/restore-tmp/r1")
    text = room_problem(needed=69_000_001, free=2_000_000, folder=folder)
    assert text is not None
    assert f"needs 70 MB in {folder}" in text
    assert "2 MB free" in text
    assert "RECONCILER_SPOOL_DIR" in text
    assert room_problem(needed=5, free=5, folder=folder) is None


def test_the_error_after_writing_names_both_failures() -> None:
    ok = failed_after_writing("load failed", put_back_error=None, safety="s3://b/p", safety_id="x")
    assert ok.startswith("load failed; the safety copy s3://b/p (backup x) was put back")
    both = failed_after_writing(
        "load failed", put_back_error="engine gone", safety="s3://b/p", safety_id="x"
    )
    assert "load failed" in both
    assert "putting the safety copy back failed too: engine gone" in both
    assert "reconciler restore x --source s3://b/p --yes" in both


@pytest.mark.parametrize(
    ("done", "stopped"),
    [
        (["stopping web", "stopped web", "started web"], set()),
        (["stopping web", "stopped web"], {"web"}),
        # A put-back stops a database again after the restore had started it.
        (["stopping db", "stopped db", "started db", "putting the safety copy back",
          "stopping db"], {"db"}),
    ],
)  # fmt: skip
def test_left_stopped_reads_the_steps_in_order(done: list[str], stopped: set[str]) -> None:
    assert left_stopped(done) == stopped


def test_an_artifact_decompressing_beyond_its_manifest_is_refused(tmp_path: Path) -> None:
    raw = b"x" * 5_000_000
    path = tmp_path / "a"
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    stored = path.stat().st_size
    assert b"".join(decompressed(ref(stored, len(raw)), path)) == raw
    with pytest.raises(VerifyError, match="decompresses to more than the 1000 bytes"):
        b"".join(decompressed(ref(stored, 1000), path))


def test_fetch_stops_reading_past_the_manifest_size(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'store'}")
    store.put_bytes("b1/volumes/site.tar.zst", b"y" * 3_000_000)
    spool = tmp_path / "spool"
    spool.mkdir()
    with pytest.raises(VerifyError, match="read more than 1000 bytes"):
        fetch_verified(legacy_target(store), ref(1000), spool)
    assert list(spool.iterdir()) == []  # nothing kept
