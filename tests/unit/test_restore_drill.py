"""The drill's pure parts: when it is due, and how an archive is compared with a volume."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.restore.restore_drill import compare, drill_due, tar_entries

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "every", "due"),
    [
        (None, "week", True),
        ({}, "week", True),
        ({"time": (NOW - timedelta(days=6)).isoformat(), "result": "ok"}, "week", False),
        ({"time": (NOW - timedelta(days=7)).isoformat()}, "week", True),
        ({"time": (NOW - timedelta(hours=23)).isoformat(), "result": "ok"}, "day", False),
        ({"time": (NOW - timedelta(hours=25)).isoformat()}, "day", True),
        ({"time": (NOW - timedelta(days=29)).isoformat(), "result": "ok"}, "month", False),
        ({"time": "garbage"}, "week", True),
        ({"time": (NOW - timedelta(hours=25)).isoformat(), "result": "failed"}, "week", True),
        ({"time": (NOW - timedelta(hours=25)).isoformat(), "result": "ok"}, "week", False),
    ],
)
def test_drill_due(last: dict[str, str] | None, every: str, due: bool) -> None:
    assert drill_due(last, every=every, now=NOW) is due


def archive(files: dict[str, bytes], *, mode: int = 0o644, link: str | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        root = tarfile.TarInfo("./")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            info.mode = mode
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("./link")
            info.type = tarfile.SYMTYPE
            info.linkname = link
            tar.addfile(info)
    return out.getvalue()


def chunks(data: bytes, size: int = 777) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_identical_archives_compare_equal_however_chunked() -> None:
    data = archive({"a.txt": b"hello", "dir/b.bin": bytes(range(256)) * 100}, link="a.txt")
    entries = tar_entries(chunks(data))
    assert set(entries) == {".", "a.txt", "dir/b.bin", "link"}
    assert entries["link"].link == "a.txt"
    assert compare(entries, tar_entries([data])) == []


def test_differences_are_named() -> None:
    expected = tar_entries([archive({"a.txt": b"hello", "b.txt": b"x"})])
    assert compare(expected, tar_entries([archive({"a.txt": b"hellO", "c.txt": b"x"})])) == [
        "a.txt: differs (sha256)",
        "b.txt: in the backup but missing after the restore",
        "c.txt: in the volume but not in the backup",
    ]
    assert compare(expected, tar_entries([archive({"a.txt": b"hello", "b.txt": b"x"}, mode=0o600)]))
