"""The daemon's control socket: ``reconciler sync`` asks the running daemon for the pass.

A ``reconciler sync`` run beside a daemon (``docker exec site-reconciler-1
reconciler sync``) would otherwise start a second interpreter that imports
the whole deploy side and opens new connections to Docker and git, to do
what the daemon, already warm, does in a few tens of milliseconds. Like
``flux reconcile`` or ``argocd app sync``, the command asks the controller:
it connects to ``<state dir>/control.sock``, the daemon runs one pass (under
the pass lock, so never beside its own loop's pass) and answers with the
outcome, which the command prints as if it had run the pass itself. With no
daemon listening, the command runs the pass in its own process, as before.

The socket is the daemon's own door, not a network service: a Unix socket in
the private state folder (mode 0600), answering only the daemon's own user
or root (``SO_PEERCRED``). A request is one JSON line, read under a deadline
for the whole line and a size limit; it names the settings the command would
use, and a daemon whose settings differ (another repo, branch, folder,
project) refuses, so the command runs its own pass with its own settings.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import DaemonGone
from reconciler.logs import event
from reconciler.settings import Settings
from reconciler.state import names

SOCKET_NAME = names.CONTROL_SOCKET
MAX_REQUEST_BYTES = 4096
REQUEST_DEADLINE_S = 5.0
# The pass may wait for the lock (PASS_LOCK_WAIT_S) and then build images.
REPLY_WAIT_S = 3600.0
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path, minus the terminating NUL


@dataclass(frozen=True)
class SyncReply:
    """What the command prints: the same fields as an in-process pass's outcome."""

    result: str
    reason: str
    message: str = ""
    commit: str | None = None
    changes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result == "succeeded"


def socket_path(settings: Settings) -> Path:
    return settings.state_dir / SOCKET_NAME


def identity(settings: Settings) -> dict[str, str]:
    """The settings a pass depends on: a daemon with others must not answer for them."""
    return {
        "repo": settings.repo,
        "branch": settings.branch,
        "directory": settings.directory,
        "project": settings.project or "",
        "state_dir": str(settings.state_dir),
    }


# -- the command's side -------------------------------------------------------


def ask_for_sync(settings: Settings, *, connect_timeout_s: float = 1.0) -> SyncReply | None:
    """The daemon's pass, or None when no daemon (of these settings) answers.

    Raises ``DaemonGone`` when the daemon accepted the request and died or
    closed the connection before answering: a pass may have run, half of it
    or none, and the daemon's log says which.
    """
    path = socket_path(settings)
    if len(os.fsencode(path)) > _SUN_PATH_MAX or not path.is_socket():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(connect_timeout_s)
        try:
            conn.connect(os.fsencode(path))
        except OSError:
            return None  # a socket left by a daemon that is gone
        request = {"command": "sync", "settings": identity(settings)}
        conn.sendall(json.dumps(request).encode() + b"\n")
        conn.settimeout(REPLY_WAIT_S)
        data = _read_line(conn, limit=1 << 20, deadline_s=REPLY_WAIT_S)
    except (TimeoutError, OSError) as exc:
        raise DaemonGone(f"no answer from the daemon at {path}: {exc}") from exc
    finally:
        conn.close()
    if data is None:
        raise DaemonGone(f"the daemon at {path} closed the connection before the pass ended")
    reply = _parse_reply(data)
    if reply is None:
        return None  # refused: other settings; the command runs its own pass
    return reply


def _parse_reply(data: bytes) -> SyncReply | None:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise DaemonGone(f"the daemon's answer is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise DaemonGone("the daemon's answer is not a JSON object")
    if raw.get("refused"):
        return None
    changes = raw.get("changes")
    if not isinstance(raw.get("result"), str) or not isinstance(changes, list):
        raise DaemonGone("the daemon's answer has no result")
    return SyncReply(
        result=str(raw["result"]),
        reason=str(raw.get("reason") or ""),
        message=str(raw.get("message") or ""),
        commit=str(raw["commit"]) if raw.get("commit") else None,
        changes=[str(change) for change in changes],
    )


# -- the daemon's side --------------------------------------------------------

RunSync = Callable[[], SyncReply]


class ControlSocket:
    """The socket beside the loop (a ``daemon.Background``); one request at a time.

    One at a time is no loss: passes run one after the other under the pass
    lock anyway, and a client that sends nothing holds the socket for at most
    ``REQUEST_DEADLINE_S``.
    """

    def __init__(self, settings: Settings, run_sync: RunSync) -> None:
        self.settings = settings
        self.run_sync = run_sync
        self.path = socket_path(settings)
        self.listener: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            event(
                "control.off",
                level=logging.WARNING,
                reason=f"the path {self.path} is too long for a Unix socket",
                hint="`reconciler sync` runs its own pass instead",
            )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            if _listening(self.path):
                event(
                    "control.off",
                    level=logging.WARNING,
                    reason=f"another daemon listens on {self.path} (two daemons, one state folder)",
                )
                return
            self.path.unlink()  # left by a killed daemon
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(os.fsencode(self.path))
        except OSError as exc:
            listener.close()
            event("control.off", level=logging.WARNING, error=str(exc))
            return
        finally:
            os.umask(old_umask)
        listener.listen(8)
        listener.settimeout(0.5)  # so stop() is seen
        self.listener = listener
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self.thread.start()
        event("control.listening", path=str(self.path))

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self.listener is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            with conn:
                try:
                    self._answer(conn)
                except OSError as exc:  # the client went away: its loss only
                    event("control.dropped", level=logging.WARNING, error=str(exc))

    def _answer(self, conn: socket.socket) -> None:
        uid = _peer_uid(conn)
        if uid not in (0, os.getuid()):
            event("control.refused", level=logging.WARNING, uid=uid, reason="another user")
            return
        data = _read_line(conn, limit=MAX_REQUEST_BYTES, deadline_s=REQUEST_DEADLINE_S)
        problem, request = _check_request(data)
        if problem:
            event("control.refused", level=logging.WARNING, reason=problem)
            _send(conn, {"refused": problem})
            return
        if request.get("settings") != identity(self.settings):
            _send(conn, {"refused": "the daemon runs with other settings"})
            return
        event("control.sync")
        try:
            reply = self.run_sync()
        except Exception as exc:  # a bug in a pass must not close the door for the next one
            event("control.crashed", level=logging.ERROR, error=repr(exc), exc_info=True)
            reply = SyncReply("failed", "InternalError", f"internal error: {exc!r}")
        _send(conn, asdict(reply))


def _check_request(data: bytes | None) -> tuple[str, dict[str, Any]]:
    if data is None:
        return "no request line (too long, too slow, or cut)", {}
    try:
        raw = json.loads(data)
    except ValueError:
        return "the request is not JSON", {}
    if not isinstance(raw, dict) or raw.get("command") != "sync":
        return "the only request is {'command': 'sync', 'settings': {...}}", {}
    return "", raw


def _read_line(conn: socket.socket, *, limit: int, deadline_s: float) -> bytes | None:
    """One newline-ended line within ``deadline_s`` in all; None if cut, slow or too long."""
    deadline = time.monotonic() + deadline_s
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or len(data) > limit:
            return None
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            return None
        if not chunk:
            return None
        data += chunk
    line = data.split(b"\n", 1)[0]
    return line if len(line) <= limit else None


def _send(conn: socket.socket, payload: dict[str, Any]) -> None:
    conn.settimeout(REQUEST_DEADLINE_S)
    conn.sendall(json.dumps(payload).encode() + b"\n")


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fsencode(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)
