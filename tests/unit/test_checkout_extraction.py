"""Extracting a commit's archive, also where tarfile has no filters (Debian 12's Python)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from reconciler.adapters.git_source import _extract


def archive(*members: tuple[str, bytes | None, str]) -> tarfile.TarFile:
    """A tar in memory: (name, data or None for a symlink, link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.SYMTYPE
                info.linkname = target
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


@pytest.fixture(params=["with filters", "without filters"])
def filters(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "without filters":
        monkeypatch.delattr(tarfile, "tar_filter", raising=False)


@pytest.mark.usefixtures("filters")
def test_files_modes_and_symlinks_are_kept(tmp_path: Path) -> None:
    _extract(archive(("a/run.sh", b"#!/bin/sh\n", ""), ("a/link", None, "run.sh")), tmp_path)
    assert (tmp_path / "a" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a" / "link").readlink() == Path("run.sh")


@pytest.mark.usefixtures("filters")
@pytest.mark.parametrize("name", ["../escape", "a/../../escape"])
def test_paths_outside_the_root_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(tarfile.TarError):
        _extract(archive((name, b"x", "")), tmp_path / "root")
    assert not (tmp_path / "escape").exists()
