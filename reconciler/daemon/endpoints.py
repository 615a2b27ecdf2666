"""The daemon's HTTP endpoints: ``/healthz``, Prometheus ``/metrics``, and the push hook.

``POST /hooks/push`` is served only when ``RECONCILER_WEBHOOK_SECRET`` is set
(docs/webhooks.md): a signed push of the followed branch starts a pass at once
(``Daemon.request_pass``); polling goes on beside it. The server itself
(daemon/http_serving.py) caps connections, the time a request may take and
its size, so neither slow clients nor a flood at the hook starve the others.

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
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from reconciler.daemon.http_serving import HttpServer, Limits, Request, Response
from reconciler.daemon.loop import loop_health
from reconciler.daemon.metrics import HttpMetrics
from reconciler.decide import webhooks
from reconciler.logs import event
from reconciler.redaction import register_secret
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


WEBHOOK_PATH = "/hooks/push"
REFUSAL_LOG_EVERY_S = 60.0
Trigger = Callable[[], None]


class PushHook:
    """``POST /hooks/push``: judged by ``webhooks.judge``; an accepted push calls ``trigger``."""

    def __init__(
        self, settings: Settings, *, trigger: Trigger, metrics: HttpMetrics | None = None
    ) -> None:
        assert settings.webhook_secret, "the hook is served only with a secret"
        self.secret = settings.webhook_secret
        register_secret(self.secret)  # masked in every log line from now on, should one quote it
        self.branch = settings.branch
        self.trigger = trigger
        self.metrics = metrics
        self.recent = webhooks.RecentDeliveries()
        self._lock = threading.Lock()  # judge() reads and updates ``recent``
        self._last_warned: dict[str, float] = {}

    def __call__(self, request: Request) -> Response:
        with self._lock:
            verdict = webhooks.judge(
                request.headers,
                request.body,
                secret=self.secret,
                branch=self.branch,
                recent=self.recent,
            )
        if self.metrics is not None:
            self.metrics.delivery(verdict.result)
        if verdict.status < 400 or self._warn_now(verdict.result):
            # A refusal is logged once a minute at most (a flood must not fill
            # the log; the metric counts every one): enough to see a wrong secret.
            event(
                "webhook." + verdict.result,
                level=20 if verdict.status < 400 else 30,
                delivery=verdict.delivery,
                ref=verdict.ref,
                message=verdict.message,
            )
        if verdict.starts_pass:
            self.trigger()
        body = json.dumps({"result": verdict.result, "message": verdict.message}).encode()
        return Response(verdict.status, body + b"\n", "application/json")

    def _warn_now(self, result: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last_warned.get(result, -REFUSAL_LOG_EVERY_S) < REFUSAL_LOG_EVERY_S:
                return False
            self._last_warned[result] = now
        return True


class Endpoints:
    """The HTTP server beside the loop (a ``daemon.Background``): health, metrics, the hook."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        *,
        trigger: Trigger | None = None,
        metrics: HttpMetrics | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or HttpMetrics(registry)
        self.limits = limits or Limits(max_body_bytes=webhooks.MAX_BODY_BYTES)
        self.hook: PushHook | None = None
        if settings.webhook_secret and trigger is not None:
            self.hook = PushHook(settings, trigger=trigger, metrics=self.metrics)
        self.server: HttpServer | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens (the real port once started), None when not serving."""
        return self.server.address if self.server is not None else None

    def handle(self, request: Request) -> Response:
        if request.path == WEBHOOK_PATH and self.hook is not None:
            if request.method != "POST":
                return Response(405, b"POST a signed push event here\n")
            return self.hook(request)
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"only GET (and POST /hooks/push with the webhook on)\n")
        if request.path == "/metrics":
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            code, body = health_report(self.settings)
            return Response(code, json.dumps(body).encode() + b"\n", "application/json")
        return Response(404, b"not found: try /metrics or /healthz\n")

    def _refused(self, reason: str, path: str | None) -> None:
        self.metrics.refusal(reason, path)
        if path == WEBHOOK_PATH and self.hook is not None and reason == "too_large":
            self.metrics.delivery("too_large")

    def start(self) -> None:
        bind = self.settings.metrics_bind
        if bind is None:
            event("metrics.off", reason="RECONCILER_METRICS_ADDR=off")
            if self.settings.webhook_secret:
                event(
                    "webhook.off",
                    level=30,
                    reason="RECONCILER_METRICS_ADDR=off",
                    hint="the webhook is served on the metrics address: set one to receive pushes",
                )
            return
        try:
            self.server = HttpServer(
                bind, self.handle, limits=self.limits, on_refused=self._refused, name="metrics-http"
            )
        except OSError as exc:
            event(
                "metrics.unavailable",
                level=40,
                address=self.settings.metrics_addr,
                error=exc.strerror or str(exc),
                hint="set RECONCILER_METRICS_ADDR to a free HOST:PORT of this host, or off; "
                "deploys go on without /metrics and /healthz (and the webhook: polling goes on)",
            )
            return
        self.server.start()
        host, port = self.server.address
        paths = "/metrics /healthz" + (f" {WEBHOOK_PATH}" if self.hook else "")
        event("metrics.listening", address=f"{host}:{port}", paths=paths)

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.stop()
        self.server = None
