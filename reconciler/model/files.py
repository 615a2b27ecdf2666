"""Content hashes of files and folders of the checked-out commit.

A bind-mounted repo file or a build context is part of a service's desired
configuration: when its contents change the service must be recreated (or the
image rebuilt). ``hash_path`` turns a file or a whole tree into one stable
digest that the config hash and the built image tag can include.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection
from pathlib import Path

# Git's own folder changes with every fetch and is never part of what a
# service sees; hashing it would rebuild images on every commit.
_SKIPPED_NAMES = frozenset({".git"})
_CHUNK = 1 << 16


def hash_path(path: Path, *, skip: Collection[str] = ()) -> str:
    """A sha256 hex digest of a file or a folder tree.

    Covers every entry's path relative to ``path``, its permission bits, the
    contents of regular files and the target of symlinks (never followed), in
    sorted order, so it is the same on every run and on every machine that has
    the same files with the same permissions. A missing ``path`` raises ``FileNotFoundError``.
    ``skip``: paths relative to ``path`` (``app/node_modules``) left out with all
    they hold: mount points, which Docker makes in a bind-mounted folder for
    the volumes mounted inside it, and which no container sees.
    """
    digest = hashlib.sha256()
    for relative, full in _entries(path, skip=frozenset(skip)):
        _add_entry(digest, relative, full)
    return digest.hexdigest()


def _entries(root: Path, *, skip: frozenset[str]) -> list[tuple[str, Path]]:
    """Every entry under ``root`` (itself included, as "."), sorted by relative path."""
    root_stat = root.lstat()  # raises FileNotFoundError when missing
    found: list[tuple[str, Path]] = [(".", root)]
    if stat.S_ISDIR(root_stat.st_mode):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(dirpath).relative_to(root)
            dirnames[:] = [
                d for d in dirnames if d not in _SKIPPED_NAMES and (base / d).as_posix() not in skip
            ]
            for name in [*dirnames, *filenames]:
                relative = (base / name).as_posix()
                if name in _SKIPPED_NAMES or relative in skip:
                    continue
                found.append((relative, Path(dirpath, name)))
    found.sort(key=lambda entry: entry[0].encode())
    return found


def _add_entry(digest: hashlib._Hash, relative: str, full: Path) -> None:
    info = full.lstat()
    mode = stat.S_IMODE(info.st_mode)
    # Each field is length-prefixed so that no two different trees can
    # produce the same byte stream.
    if stat.S_ISLNK(info.st_mode):
        fields = [b"link", relative.encode(), os.readlink(full).encode()]
    elif stat.S_ISDIR(info.st_mode):
        fields = [b"dir", relative.encode(), f"{mode:o}".encode()]
    elif stat.S_ISREG(info.st_mode):
        fields = [b"file", relative.encode(), f"{mode:o}".encode(), _file_digest(full)]
    else:
        fields = [b"other", relative.encode(), f"{stat.S_IFMT(info.st_mode):o}".encode()]
    for value in fields:
        digest.update(len(value).to_bytes(8, "big"))
        digest.update(value)


def _file_digest(path: Path) -> bytes:
    file_hash = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            file_hash.update(chunk)
    return file_hash.digest()
