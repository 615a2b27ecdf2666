"""Durable local state as small JSON files that survive a crash mid-write.

A write goes to a temp file, is fsynced, and renamed over the old one (then the
folder is fsynced), so a reader sees the old or the new document, never half of
one. The previous version is kept as ``NAME.prev``: a file found corrupt (a
disk that lied, a hand edit) is moved aside and the previous one is used.

Everything the reconciler writes on the host (state, ``file://`` targets, the
spool, safety copies, keys) may hold a dump with password hashes or a key:
``private_dir`` and ``private_file`` make it 0700 folders and 0600 files,
whatever the umask of the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from reconciler.errors import StateCorrupt, StateError
from reconciler.logs import event

# Free-text fields of state documents (status, history, restore ledger, drill):
# an error there may quote a decrypted secret. Only these are masked, never an
# id, a commit or a time, whose value the state depends on.
_MESSAGE_KEYS = frozenset({"message", "last_error", "error", "hint", "detail", "services_error"})


def _masked(data: Any) -> Any:
    from reconciler.redaction import redact_text

    if isinstance(data, dict):
        return {
            k: redact_text(v) if k in _MESSAGE_KEYS and isinstance(v, str) else _masked(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_masked(item) for item in data]
    return data


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """``mkdir -p`` with every created level 0700; an existing ``path`` is tightened to 0700.

    ``tighten=False`` leaves an existing ``path`` as it is: a folder the user
    chose (the root of a ``file://`` target may be a shared mount point).
    Levels above ``path`` that already exist are never touched.
    """
    missing: list[Path] = []
    level = path
    while not level.exists() and level != level.parent:
        missing.append(level)
        level = level.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            # mkdir's mode is masked by the umask, so it is never wider than
            # 0700; the chmod only adds back owner bits a strange umask removed.
            level.mkdir(mode=PRIVATE_DIR_MODE)
            os.chmod(level, PRIVATE_DIR_MODE)
    if tighten and not missing:
        st = path.stat()
        # Only a folder of ours, and never a shared one like /tmp (sticky bit).
        shared = st.st_mode & stat.S_ISVTX or st.st_uid != os.geteuid()
        if st.st_mode & 0o777 != PRIVATE_DIR_MODE and not shared:
            os.chmod(path, PRIVATE_DIR_MODE)  # left 0755 by an older version
    return path


def private_file(path: Path) -> BinaryIO:
    """A new file at ``path``, created 0600 (never chmod-ed later, so there is no window).

    ``O_EXCL``: an existing file (a temp left by a killed run, possibly 0644)
    is removed first rather than reused with its old mode.
    """
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


def atomic_write_json(path: Path, data: Any) -> None:
    """``data`` as the new content of ``path``, the last valid one kept as ``NAME.prev``."""
    payload = json.dumps(_masked(data), indent=2, sort_keys=True, default=str).encode() + b"\n"
    replace_file(path, payload, keep_previous=True)


def replace_file(
    path: Path, payload: bytes, *, durable: bool = True, keep_previous: bool = False
) -> None:
    """The one way local state is written: ``payload`` replaces ``path`` whole, 0600.

    A reader, another process or thread, sees the old content or the new one,
    never half of one. ``durable``: fsynced (file and folder) before this
    returns; the daemon's heartbeat, rewritten every tick, is not.
    ``keep_previous``: a valid JSON document at ``path`` stays as ``NAME.prev``.
    """
    try:
        private_dir(path.parent)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    # Unique per process and thread: the daemon's threads write state too.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with private_file(tmp) as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if keep_previous and _is_valid_json(path):  # a corrupt file never becomes .prev
            # A hard link, not a rename: ``path`` must exist at every instant.
            prev = path.with_name(path.name + ".prev")
            with contextlib.suppress(OSError):
                prev.unlink(missing_ok=True)
                os.link(path, prev)
        os.replace(tmp, path)
        if durable:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_json(path: Path, *, fallback: bool = True) -> Any | None:
    """The document at ``path``, falling back to ``.prev`` when it is corrupt.

    A corrupt file is renamed ``NAME.corrupt-<time>`` (kept for a post-mortem)
    and reported; None when there is no usable document at all.

    With ``fallback=False`` (the restore ledger, where an older copy would run
    a finished request again) a corrupt file raises ``StateCorrupt`` and stays
    where it is, and ``.prev`` is never read in its place.
    """
    if not fallback:
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            event("state.corrupt", level=40, file=str(path), error=str(exc))
            raise StateCorrupt(path, str(exc)) from exc
    for candidate in (path, path.with_name(path.name + ".prev")):
        if not candidate.exists():
            continue
        try:
            return json.loads(candidate.read_text())
        except (OSError, ValueError) as exc:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = candidate.with_name(f"{candidate.name}.corrupt-{stamp}")
            with contextlib.suppress(OSError):
                os.replace(candidate, aside)
            event(
                "state.corrupt",
                level=40,
                file=str(candidate),
                moved_to=str(aside),
                error=str(exc),
            )
    return None


def _is_valid_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait_s: float, what: str) -> Iterator[None]:
    """Hold an flock on ``path``; wait up to ``wait_s`` for another holder, then fail.

    The kernel drops the lock when the holder dies, so a killed process never
    leaves a stale lock behind.
    """
    try:
        private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    except OSError as exc:  # a missing, full or read-only state folder: the caller's StateError
        raise StateError(f"cannot lock {path}: {exc.strerror or exc}") from exc
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StateError(
                        f"another {what} is running (lock {path}); wait for it to finish"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
