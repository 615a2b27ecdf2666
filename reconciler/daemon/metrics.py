"""Prometheus metrics: what lives in the state, read at scrape time; pass timings, in process.

Everything ``reconciler status`` shows (the applied commit, the Ready
condition, the last backup, the restore ledger, the drill) is read from the
state files when Prometheus scrapes, as the same typed report ``status``
prints (``reconciler/status_report.py``), so the two always agree and the
values survive a restart of the daemon. Only what
happens inside this process and is kept nowhere else (how long each pass took,
how many passes ended how) is counted in memory, by a ``PassListener``.

A scrape reads a handful of small local files: no Docker, git or S3 call. A
missing or corrupt file leaves its metrics out (and a corrupt one is logged by
the reader); it never fails the scrape. docs/metrics.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from reconciler import __version__
from reconciler.daemon.http_serving import REFUSALS
from reconciler.daemon.loop import heartbeat_path, loop_health
from reconciler.decide.restore_planning import LedgerState
from reconciler.decide.webhooks import RESULTS as WEBHOOK_RESULTS
from reconciler.deploy.passes import PassOutcome
from reconciler.logs import event
from reconciler.settings import Settings
from reconciler.status_report import DrillReport, StatusReport, collect

# Passes take from a tenth of a second (nothing changed) to minutes (an image
# build, health checks, a restore after the apply).
PASS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DRILL_RESULTS = ("ok", "failed")


class PassMetrics:
    """The ``PassListener`` that times and counts passes (in process: kept nowhere else)."""

    __name__ = "pass_metrics"  # how a crash of it is named in the log

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "reconciler_pass_duration_seconds",
            "How long a pass (fetch, validate, observe, plan, apply) took, by result.",
            ["result"],
            buckets=PASS_BUCKETS,
            registry=registry,
        )
        self.passes = Counter(
            "reconciler_passes",
            "Passes finished since the daemon started, by result and reason.",
            ["result", "reason"],
            registry=registry,
        )

    def __call__(self, outcome: PassOutcome, duration_s: float) -> None:
        self.duration.labels(result=outcome.result).observe(duration_s)
        self.passes.labels(result=outcome.result, reason=outcome.reason).inc()


class HttpMetrics:
    """Counts of the endpoints' webhook deliveries and refused requests (in process).

    Every label value starts at 0, so ``increase()`` sees the first refusal.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhook = Counter(
            "reconciler_webhook_requests",
            "Deliveries to POST /hooks/push, by result (accepted starts a pass).",
            ["result"],
            registry=registry,
        )
        self.refused = Counter(
            "reconciler_http_refused_requests",
            "Requests to the endpoints refused before a handler saw them, by reason.",
            ["reason"],
            registry=registry,
        )
        for result in WEBHOOK_RESULTS:
            self.webhook.labels(result=result)
        for reason in REFUSALS:
            self.refused.labels(reason=reason)

    def delivery(self, result: str) -> None:
        self.webhook.labels(result=result).inc()

    def refusal(self, reason: str, path: str | None) -> None:
        self.refused.labels(reason=reason).inc()


class StateCollector(Collector):
    """Metrics read from the state folder at each scrape (see the module's docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("reconciler", "The reconciler's version.")
        info.add_metric([], {"version": __version__})
        yield info
        yield from self._loop()
        try:
            report = collect(self.settings)  # the state only: no engine at a scrape
        except Exception as exc:  # the status file itself: the other sections still count
            event("metrics.section_failed", level=30, section="status", error=repr(exc))
            return
        for name, error in report.errors.items():
            event("metrics.section_failed", level=30, section=name, error=error)
        sections: tuple[tuple[str, Callable[[StatusReport], list[Metric]]], ...] = (
            ("status", self._status),
            ("backup", self._backup),
            ("restores", self._restores),
            ("drill", self._drill),
        )
        for name, section in sections:
            if name in report.errors:
                continue  # unreadable: its metrics are left out, not guessed
            try:
                metrics = section(report)
            except Exception as exc:  # one bad part must not cost the whole scrape
                event("metrics.section_failed", level=30, section=name, error=repr(exc))
                continue
            yield from metrics

    def _loop(self) -> list[Metric]:
        health = loop_health(self.state_dir, interval_s=self.settings.interval_s)
        alive = GaugeMetricFamily(
            "reconciler_loop_alive",
            "1 while the daemon's loop ran recently (the rule of /healthz and the healthcheck).",
            value=1 if health.alive else 0,
        )
        out: list[Metric] = [alive]
        try:
            beat = heartbeat_path(self.state_dir).stat().st_mtime
        except OSError:
            return out
        out.append(
            GaugeMetricFamily(
                "reconciler_heartbeat_timestamp_seconds",
                "When the daemon's loop last ran (Unix time).",
                value=beat,
            )
        )
        return out

    def _status(self, status: StatusReport) -> list[Metric]:
        ready = GaugeMetricFamily(
            "reconciler_ready",
            "The Ready condition: 1 when the last pass converged; the reason says why not.",
            labels=["reason"],
        )
        ready.add_metric([status.reason], 1 if status.ready else 0)
        failures = GaugeMetricFamily(
            "reconciler_consecutive_failures",
            "Passes in a row that did not succeed (0 after a converged pass).",
            value=status.consecutive_failures,
        )
        out: list[Metric] = [ready, failures]
        if status.applied_commit:
            commit = InfoMetricFamily(
                "reconciler_applied_commit",
                "The commit the stack was last converged to.",
            )
            commit.add_metric(
                [],
                {
                    "commit": status.applied_commit,
                    "branch": status.branch or self.settings.branch,
                    "project": status.project or self.settings.project or "",
                },
            )
            out.append(commit)
        out += _timestamp(
            "reconciler_applied_commit_timestamp_seconds",
            "When the applied commit was applied (Unix time); its age is time() minus this.",
            status.applied_at,
        )
        out += _timestamp(
            "reconciler_last_pass_timestamp_seconds",
            "When the last pass ended (Unix time).",
            status.last_sync,
        )
        return out

    def _backup(self, status: StatusReport) -> list[Metric]:
        report = status.backup
        out: list[Metric] = [
            GaugeMetricFamily(
                "reconciler_backup_scheduled",
                "1 when the applied commit's backup.yaml schedules daily backups.",
                value=1 if report.schedule else 0,
            )
        ]
        out += _timestamp(
            "reconciler_backup_next_timestamp_seconds",
            "When the next scheduled backup is due (Unix time).",
            report.next,
        )
        last = report.last
        if last is None:
            return out
        out += _timestamp(
            "reconciler_backup_last_attempt_timestamp_seconds",
            "When the last backup, good or not, started (Unix time).",
            last.time,
        )
        if last.result in ("ok", "failed"):
            out.append(
                GaugeMetricFamily(
                    "reconciler_backup_last_attempt_success",
                    "1 when the last backup succeeded, 0 when it failed.",
                    value=1 if last.result == "ok" else 0,
                )
            )
        out += _timestamp(
            "reconciler_backup_last_success_timestamp_seconds",
            "When the last successful backup started (Unix time).",
            last.last_success_time,
        )
        size = last.last_success_size
        if size is None and last.result == "ok":
            size = last.size  # a status file from before last_success_size
        if size is not None:
            out.append(
                GaugeMetricFamily(
                    "reconciler_backup_last_success_size_bytes",
                    "Bytes stored by the last successful backup.",
                    value=size,
                )
            )
        return out

    def _restores(self, status: StatusReport) -> list[Metric]:
        readable = status.ledger_readable
        counts = dict.fromkeys(get_args(LedgerState), 0)
        if readable:
            for record in status.restores:
                counts[record.state] = counts.get(record.state, 0) + 1
        requests = GaugeMetricFamily(
            "reconciler_restore_requests",
            "Restore requests in this VM's ledger, by state (failed and interrupted are final).",
            labels=["state"],
        )
        for state, count in counts.items():
            requests.add_metric([state], count)
        ledger = GaugeMetricFamily(
            "reconciler_restore_ledger_readable",
            "0 when the restore ledger cannot be read: no restore request runs until it is fixed.",
            value=1 if readable else 0,
        )
        return [requests, ledger]

    def _drill(self, status: StatusReport) -> list[Metric]:
        drill = status.drill
        if drill is None:
            return []
        counts = _drill_counts(drill)
        total = CounterMetricFamily(
            "reconciler_restore_drills",
            "Restore drills run on this VM, by result.",
            labels=["result"],
        )
        for result in DRILL_RESULTS:
            total.add_metric([result], counts.get(result, 0))
        out: list[Metric] = [total]
        if drill.result in DRILL_RESULTS:
            out.append(
                GaugeMetricFamily(
                    "reconciler_restore_drill_last_success",
                    "1 when the last restore drill passed, 0 when it failed.",
                    value=1 if drill.result == "ok" else 0,
                )
            )
        out += _timestamp(
            "reconciler_restore_drill_last_timestamp_seconds",
            "When the last restore drill ended (Unix time).",
            drill.finished or drill.time,
        )
        return out


def _drill_counts(drill: DrillReport) -> dict[str, int]:
    if drill.counts is not None:
        return {k: v for k, v in drill.counts.items() if v >= 0}
    # drill.json from before the counts: its own result is all that is known.
    return {drill.result: 1} if drill.result else {}


def _timestamp(name: str, documentation: str, value: object) -> list[Metric]:
    """A Unix-time gauge from a datetime or an ISO 8601 string; nothing when absent or bad."""
    when: datetime | None = None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        return []  # a naive time has no Unix time we could vouch for
    return [GaugeMetricFamily(name, documentation, value=when.timestamp())]


def make_registry(settings: Settings) -> tuple[CollectorRegistry, PassMetrics]:
    """The daemon's registry: the state collector, the pass listener, process metrics."""
    from prometheus_client import PlatformCollector, ProcessCollector, disable_created_metrics

    # No *_created series beside each counter and histogram: a start time per
    # series that nothing alerts on (and process_start_time_seconds says it).
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(StateCollector(settings))
    return registry, PassMetrics(registry)
