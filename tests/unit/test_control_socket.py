"""The daemon's control socket (daemon/control.py) over a real Unix socket, no engine.

The pass is a stand-in (it only counts calls): what is tested here is the
door, who it answers, and that a bad or slow client cannot keep it shut.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from reconciler.daemon.control import (
    MAX_REQUEST_BYTES,
    REQUEST_DEADLINE_S,
    ControlSocket,
    SyncReply,
    ask_for_sync,
    identity,
)
from reconciler.settings import Settings, load_settings


@pytest.fixture
def settings() -> Iterator[Settings]:
    # Short on purpose: a Unix socket's path has at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="rc-", dir="/tmp") as folder:
        yield load_settings(
            {"RECONCILER_REPO": "/srv/repo", "RECONCILER_ENV_FILE": "/dev/null"},
            state_dir=folder,
        )


class Passes:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> SyncReply:
        with self.lock:
            self.count += 1
        return SyncReply("succeeded", "ReconciliationSucceeded", commit="abc123", changes=["x"])


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[ControlSocket, Passes]]:
    passes = Passes()
    control = ControlSocket(settings, passes)
    control.start()
    try:
        yield control, passes
    finally:
        control.stop()


def test_a_sync_asked_of_the_daemon_is_its_pass(
    settings: Settings, served: tuple[ControlSocket, Passes]
) -> None:
    control, passes = served
    assert control.path.stat().st_mode & 0o777 == 0o600
    reply = ask_for_sync(settings)
    assert reply == SyncReply(
        "succeeded", "ReconciliationSucceeded", commit="abc123", changes=["x"]
    )
    assert passes.count == 1


def test_no_daemon_means_the_command_runs_its_own_pass(settings: Settings) -> None:
    assert ask_for_sync(settings) is None
    # A socket file left by a killed daemon: nobody listens.
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(settings.state_dir / "control.sock"))
    leftover.close()
    assert ask_for_sync(settings) is None


def test_a_daemon_with_other_settings_refuses(
    settings: Settings, served: tuple[ControlSocket, Passes]
) -> None:
    _control, passes = served
    other = settings.model_copy(update={"branch": "staging"})
    assert ask_for_sync(other) is None
    assert passes.count == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"not json\n",
        b'{"command": "rm -rf /"}\n',
        b"[1, 2]\n",
        b"x" * (MAX_REQUEST_BYTES + 10) + b"\n",
        b'{"command": "sync"',  # cut: no newline, then the client closes its side
    ],
    ids=["junk", "unknown-command", "not-an-object", "too-long", "cut"],
)
def test_a_bad_request_runs_no_pass(
    payload: bytes, settings: Settings, served: tuple[ControlSocket, Passes]
) -> None:
    control, passes = served
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(REQUEST_DEADLINE_S + 5)
    conn.connect(str(control.path))
    conn.sendall(payload)
    conn.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := conn.recv(4096):
        answer += chunk
    conn.close()
    assert passes.count == 0
    if answer:
        assert "refused" in json.loads(answer)
    assert ask_for_sync(settings) is not None  # the door still opens


def test_a_client_that_sends_nothing_is_dropped_at_the_deadline(
    settings: Settings, served: tuple[ControlSocket, Passes]
) -> None:
    control, passes = served
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(control.path))
    try:
        # Sent while the silent one holds the door: answered once it is dropped.
        reply = ask_for_sync(settings)
    finally:
        silent.close()
    assert reply is not None
    assert reply.ok
    assert passes.count == 1


def test_a_pass_that_crashes_is_answered_as_failed_and_the_next_one_runs(
    settings: Settings,
) -> None:
    calls: list[float] = []

    def crashing() -> SyncReply:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("bug")
        return SyncReply("succeeded", "ReconciliationSucceeded")

    control = ControlSocket(settings, crashing)
    control.start()
    try:
        first = ask_for_sync(settings)
        second = ask_for_sync(settings)
    finally:
        control.stop()
    assert first is not None
    assert (first.ok, first.reason) == (False, "InternalError")
    assert second is not None
    assert second.ok
    assert not control.path.exists()


def test_the_identity_names_what_a_pass_depends_on(settings: Settings) -> None:
    assert identity(settings) == {
        "repo": "/srv/repo",
        "branch": "main",
        "directory": "desired-state",
        "project": "",
        "state_dir": str(settings.state_dir),
    }
