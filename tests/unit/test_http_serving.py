"""The endpoints' HTTP server (daemon/http_serving.py) and the push hook over real sockets.

No Docker: the daemon's loop is the real one, over the in-memory source and
engine of test_passes. No wall-clock asserts: "eventually" waits are generous.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from reconciler.daemon.endpoints import Endpoints
from reconciler.daemon.http_serving import HttpServer, Limits, Request, Response
from reconciler.daemon.loop import Daemon
from reconciler.daemon.metrics import HttpMetrics, make_registry
from reconciler.decide.webhooks import signature_of
from reconciler.deploy.passes import PassOutcome, Reconciler
from reconciler.settings import Settings, load_settings
from tests.fixtures.fake_engine import FakeEngine
from tests.unit.test_passes import GOOD, FakeSource, sha

SECRET = "a-webhook-secret-for-tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def eventually(check: Callable[[], bool], *, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def exchange(address: tuple[str, int], raw: bytes, *, timeout_s: float = 30.0) -> bytes:
    """Send ``raw``, read the whole answer (the server closes after one)."""
    with socket.create_connection(address, timeout=timeout_s) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed_push(delivery: str, *, ref: str = "refs/heads/main") -> bytes:
    body = json.dumps({"ref": ref, "after": delivery}).encode()
    return post(
        "/hooks/push",
        body,
        {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": "sha256=" + signature_of(SECRET, body),
        },
    )


GET_METRICS = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- the server alone -----------------------------------------------------


@pytest.fixture
def echo() -> Iterator[tuple[HttpServer, list[tuple[str, str | None]]]]:
    refused: list[tuple[str, str | None]] = []

    def handler(request: Request) -> Response:
        return Response(200, f"{request.method} {request.path} {len(request.body)}".encode())

    limits = Limits(max_connections=8, request_deadline_s=1.0, max_header_bytes=1024)
    server = HttpServer(
        ("127.0.0.1", 0),
        handler,
        limits=limits,
        on_refused=lambda reason, path: refused.append((reason, path)),
    )
    server.start()
    yield server, refused
    server.stop()


def test_a_request_is_answered_once_and_closed(
    echo: tuple[HttpServer, list[tuple[str, str | None]]],
) -> None:
    server, refused = echo
    answer = exchange(server.address, post("/x?y=1", b"hello", {}))
    assert status_of(answer) == 200
    assert b"Connection: close" in answer
    assert answer.endswith(b"POST /x 5")
    assert refused == []


def test_a_client_that_expects_100_continue_is_told_to_go_on(
    echo: tuple[HttpServer, list[tuple[str, str | None]]],
) -> None:
    server, _refused = echo
    with socket.create_connection(server.address, timeout=30) as conn:
        conn.sendall(b"POST /e HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert conn.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(b"abc")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert status_of(answer) == 200
    assert answer.endswith(b"POST /e 3")


def test_the_deadline_is_for_the_whole_request_not_each_read(
    echo: tuple[HttpServer, list[tuple[str, str | None]]],
) -> None:
    server, refused = echo
    with socket.create_connection(server.address, timeout=30) as conn:
        conn.sendall(b"GET /slow HTTP/1.1\r\n")
        closed = False
        # A byte every 0.1 s: each read would be quick; the request never ends.
        for _ in range(300):
            try:
                conn.sendall(b"X")
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        answer = b""
        if not closed:
            pytest.fail("the server kept a trickling client for 30 s")
        with contextlib.suppress(OSError):
            answer = conn.recv(65536)
    assert status_of(answer) in (0, 408)  # 408 unless the reset came first
    assert ("deadline", "/slow") in refused


def test_headers_and_bodies_over_the_limits_are_refused(
    echo: tuple[HttpServer, list[tuple[str, str | None]]],
) -> None:
    server, refused = echo
    big = post("/h", b"", {"X-Big": "a" * 2000})
    assert status_of(exchange(server.address, big)) == 431
    # The body is refused by its length, before it is sent.
    huge = b"POST /b HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"
    assert status_of(exchange(server.address, huge)) == 413
    chunked = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert status_of(exchange(server.address, chunked)) == 411
    assert status_of(exchange(server.address, b"NONSENSE\r\n\r\n")) == 400
    assert [reason for reason, _path in refused] == [
        "headers_too_large",
        "too_large",
        "bad_request",
        "bad_request",
    ]


def test_a_full_server_closes_the_oldest_unfinished_request_to_make_room(
    echo: tuple[HttpServer, list[tuple[str, str | None]]],
) -> None:
    server, refused = echo
    idle = [socket.create_connection(server.address, timeout=30) for _ in range(8)]
    try:
        for conn in idle:
            conn.sendall(b"GET / HTTP/1.1\r\n")
        assert eventually(lambda: server.open_connections == 8, timeout_s=10)
        assert status_of(exchange(server.address, GET_METRICS)) == 200
        # The oldest was closed (a reset, if it had data unread: closed all the same).
        with contextlib.suppress(ConnectionResetError):
            assert idle[0].recv(10) == b""
        assert ("over_capacity", None) in refused
    finally:
        for conn in idle:
            conn.close()


# -- the endpoints and the daemon ----------------------------------------


def daemon_settings(tmp_path: Path, *, interval: str, secret: str | None = SECRET) -> Settings:
    env = {
        "RECONCILER_REPO": "git://example.invalid/x",
        "RECONCILER_STATE_DIR": str(tmp_path / "state"),
        "RECONCILER_PROJECT": "shop",
        "RECONCILER_ENV_FILE": "/dev/null",
        "RECONCILER_INTERVAL": interval,
        "RECONCILER_METRICS_ADDR": f"127.0.0.1:{free_port()}",
    }
    if secret:
        env["RECONCILER_WEBHOOK_SECRET"] = secret
    return load_settings(env)


class Running:
    """A real daemon loop over in-memory seams, with its endpoints, on a thread."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.source = FakeSource(tmp_path / "commits")
        self.source.commit(sha(1), GOOD.replace("VERSION_VALUE", "1"))
        self.passes: list[PassOutcome] = []
        self.registry, pass_metrics = make_registry(settings)
        reconciler = Reconciler(
            settings,
            source=self.source,
            engine=FakeEngine(),
            own_container=None,
            listeners=[pass_metrics, lambda outcome, _s: self.passes.append(outcome)],
        )
        self.daemon = Daemon(reconciler, tick_s=0.05)
        self.endpoints = Endpoints(
            settings,
            self.registry,
            trigger=self.daemon.request_pass,
            metrics=HttpMetrics(self.registry),
        )
        self.daemon.background.append(self.endpoints)
        self.thread = threading.Thread(target=self.daemon.run)

    @property
    def address(self) -> tuple[str, int]:
        assert self.endpoints.address is not None
        return self.endpoints.address

    def webhook(self, result: str) -> float:
        return counter(self.registry, "reconciler_webhook_requests_total", result=result)


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Running]]:
    # run() installs signal handlers, which only the main thread may do.
    monkeypatch.setattr(signal, "signal", lambda *_a: None)
    started: list[Running] = []

    def start(**kw: str | None) -> Running:
        interval = kw.pop("interval", "3600") or "3600"
        root = tmp_path / f"daemon{len(started)}"
        run = Running(daemon_settings(root, interval=interval, **kw), root)
        run.thread.start()
        assert eventually(lambda: run.endpoints.address is not None and len(run.passes) >= 1)
        started.append(run)
        return run

    yield start
    for run in started:
        run.daemon.stopping.set()
        run.thread.join(30)


def test_a_signed_push_starts_a_pass_at_once(running: Callable[..., Running]) -> None:
    run = running()  # an hour between polls: only the hook can start the next pass
    run.source.commit(sha(2), GOOD.replace("VERSION_VALUE", "2"))
    answer = exchange(run.address, signed_push("first"))
    assert status_of(answer) == 202, answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["result"] == "accepted"
    assert eventually(lambda: any(p.commit == sha(2) and p.ok for p in run.passes))
    assert run.webhook("accepted") == 1
    # The same delivery again is refused and starts nothing.
    before = len(run.passes)
    assert status_of(exchange(run.address, signed_push("first"))) == 403
    assert run.webhook("stale") == 1
    # Another branch is acknowledged and starts nothing either.
    other = exchange(run.address, signed_push("second", ref="refs/heads/feature"))
    assert status_of(other) == 202
    assert run.webhook("wrong_branch") == 1
    time.sleep(0.5)  # room for a pass that should not come
    assert len(run.passes) == before


def test_pushes_during_a_pass_coalesce_into_one_more(running: Callable[..., Running]) -> None:
    run = running()
    gate = threading.Event()
    entered = threading.Event()
    real_remote_head = run.source.remote_head

    def slow_remote_head() -> str:
        entered.set()
        gate.wait(30)
        return real_remote_head()

    run.source.remote_head = slow_remote_head  # type: ignore[method-assign]
    before = len(run.passes)
    assert status_of(exchange(run.address, signed_push("p0"))) == 202
    assert entered.wait(30)  # a pass is running, held at its fetch
    for n in range(1, 6):
        assert status_of(exchange(run.address, signed_push(f"p{n}"))) == 202
    run.source.remote_head = real_remote_head  # type: ignore[method-assign]
    gate.set()
    assert eventually(lambda: len(run.passes) >= before + 2)
    time.sleep(0.5)  # room for more passes that should not come
    assert len(run.passes) == before + 2
    assert run.webhook("accepted") == 6


def test_the_hook_takes_only_posts_and_metrics_take_head(running: Callable[..., Running]) -> None:
    run = running()
    assert status_of(exchange(run.address, b"GET /hooks/push HTTP/1.1\r\n\r\n")) == 405
    head = exchange(run.address, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status_of(head) == 200
    assert head.endswith(b"\r\n\r\n")  # no body
    unsigned = exchange(run.address, post("/hooks/push", b"{}", {"X-GitHub-Event": "push"}))
    assert status_of(unsigned) == 401
    too_big = b"POST /hooks/push HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n"
    assert status_of(exchange(run.address, too_big)) == 413
    assert (run.webhook("unsigned"), run.webhook("too_large")) == (1, 1)


def test_no_secret_no_hook(running: Callable[..., Running]) -> None:
    run = running(secret=None)
    assert status_of(exchange(run.address, signed_push("x"))) == 405  # only GET here
    get = b"GET /hooks/push HTTP/1.1\r\n\r\n"
    assert status_of(exchange(run.address, get)) == 404


class Hostile:
    """200 connections trickling header bytes (reconnecting when closed), and junk posts."""

    def __init__(self, address: tuple[str, int], *, connections: int = 200) -> None:
        self.address = address
        self.connections = connections
        self.stopping = threading.Event()
        self.open: list[socket.socket] = []
        self.junk_answers: list[int] = []
        self.threads = [
            threading.Thread(target=self._trickle, daemon=True),
            threading.Thread(target=self._junk, daemon=True),
        ]

    def __enter__(self) -> Hostile:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)
        for conn in self.open:
            conn.close()

    def _connect(self) -> socket.socket | None:
        try:
            conn = socket.create_connection(self.address, timeout=5)
            conn.sendall(b"POST /hooks/push HTTP/1.1\r\nX-Slow: ")
            return conn
        except OSError:
            return None

    def _trickle(self) -> None:
        while not self.stopping.is_set():
            while len(self.open) < self.connections and not self.stopping.is_set():
                conn = self._connect()
                if conn is not None:
                    self.open.append(conn)
            for conn in list(self.open):
                try:
                    conn.sendall(b"x")
                except OSError:  # closed by the server's deadline: come back
                    conn.close()
                    self.open.remove(conn)
            self.stopping.wait(0.2)

    def _junk(self) -> None:
        rng = random.Random(14)
        while not self.stopping.is_set():
            body = rng.randbytes(rng.randrange(1, 4096))
            headers = rng.choice(
                [
                    {},
                    {"X-Hub-Signature-256": "sha256=" + "0" * 64},
                    {"X-Gitea-Signature": "zz"},
                    {"X-Hub-Signature": "sha1=00"},
                ]
            )
            try:
                self.junk_answers.append(
                    status_of(
                        exchange(self.address, post("/hooks/push", body, headers), timeout_s=5)
                    )
                )
            except OSError:
                self.junk_answers.append(0)
            self.stopping.wait(0.01)


def test_passes_metrics_and_the_hook_hold_up_under_tricklers_and_junk(
    running: Callable[..., Running],
) -> None:
    polled = running(interval="0.5")
    hooked = running()  # an hour between polls: only the hook starts its passes
    with Hostile(polled.address) as at_polled, Hostile(hooked.address) as at_hooked:
        assert eventually(lambda: len(at_polled.open) >= 200 and len(at_hooked.open) >= 200)
        # Passes still run on the interval while 200 connections hang on.
        before = len(polled.passes)
        assert eventually(lambda: len(polled.passes) >= before + 5)
        assert status_of(exchange(polled.address, GET_METRICS)) == 200
        # And a signed push still starts a pass at once.
        hooked.source.commit(sha(2), GOOD.replace("VERSION_VALUE", "2"))
        assert status_of(exchange(hooked.address, signed_push("under-fire"))) == 202
        assert eventually(lambda: any(p.commit == sha(2) for p in hooked.passes))
        assert eventually(lambda: len(at_polled.junk_answers) >= 20)
        # Past the 10 s deadline the first tricklers were cut, and came back.
        assert eventually(
            lambda: (
                counter(
                    polled.registry, "reconciler_http_refused_requests_total", reason="deadline"
                )
                > 0
            )
        )
        assert len(at_polled.open) >= 150  # they hang on
        assert status_of(exchange(polled.address, GET_METRICS)) == 200
    assert set(at_polled.junk_answers) <= {401, 403}, set(at_polled.junk_answers)
    assert polled.webhook("unsigned") + polled.webhook("bad_signature") == len(
        at_polled.junk_answers
    )
    assert hooked.webhook("accepted") == 1
