"""The daemon's HTTP endpoints: ``/healthz`` and Prometheus ``/metrics``.

Served from a daemon thread on ``RECONCILER_METRICS_ADDR`` (127.0.0.1:9365 by
default, ``off`` for none), started and stopped with the daemon's loop.

An address that cannot be bound (a port in use, an address the host does not
have) is logged as an error and the daemon carries on without the endpoints:
deploys, backups and restores matter more than their monitoring, and a
daemon that exited instead would be restarted by Docker into the same clash
over and over. The missing endpoint shows where it is watched (Prometheus'
``up`` turns 0, an HTTP check fails), and the log says why.

No ``/readyz``: nothing routes traffic to the reconciler, so readiness has no
consumer. The Ready condition is about the deployed stack, not this process;
it is in the ``/healthz`` body and the ``reconciler_ready`` metric, where an
alert can wait out a passing git outage (``for: 15m``).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from reconciler.daemon.loop import loop_health
from reconciler.logs import event
from reconciler.settings import Settings
from reconciler.state.status import StatusStore


def health_report(settings: Settings) -> tuple[int, dict[str, Any]]:
    """``/healthz``: 200 while the loop is alive, 503 when it is stuck; a small JSON body."""
    health = loop_health(settings.state_dir, interval_s=settings.interval_s)
    status = StatusStore(settings.state_dir).load()
    body = {
        "alive": health.alive,
        "ready": status.ready,
        "reason": status.reason,
        "applied_commit": status.applied_commit,
        "heartbeat_age_s": (
            round(health.heartbeat_age_s, 1) if health.heartbeat_age_s is not None else None
        ),
        "message": health.message,
        # A long job of the daemon (a backup, a drill) and for how long: the loop
        # goes on beside it, so it is alive meanwhile.
        "running": health.running,
        "running_for_s": (
            round(health.running_for_s, 1) if health.running_for_s is not None else None
        ),
    }
    return (200 if health.alive else 503), body


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds the daemon's exit

    def __init__(self, address: tuple[str, int], *, settings: Settings, registry: Any) -> None:
        # An IPv6 literal needs an IPv6 socket; a host name binds what it resolves to first.
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.settings = settings
        self.registry = registry
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a client may take to send its request
    server_version = "reconciler"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            code, body = health_report(self.server.settings)
            self._send(code, json.dumps(body).encode() + b"\n", "application/json")
        else:
            self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _send(self, code: int, payload: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would drown the daemon's log; errors show as events."""


class Endpoints:
    """The HTTP server beside the loop (a ``daemon.Background``)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens (the real port once started), None when not serving."""
        if self.server is None:
            return None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        bind = self.settings.metrics_bind
        if bind is None:
            event("metrics.off", reason="RECONCILER_METRICS_ADDR=off")
            return
        try:
            self.server = _Server(bind, settings=self.settings, registry=self.registry)
        except OSError as exc:
            event(
                "metrics.unavailable",
                level=40,
                address=self.settings.metrics_addr,
                error=exc.strerror or str(exc),
                hint="set RECONCILER_METRICS_ADDR to a free HOST:PORT of this host, or off; "
                "deploys go on without /metrics and /healthz",
            )
            return
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics-http", daemon=True
        )
        self.thread.start()
        host, port = self.address or bind
        event("metrics.listening", address=f"{host}:{port}", paths="/metrics /healthz")

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.server = None
        self.thread = None
