"""The daemon: a pass every interval, jobs on their schedule, until SIGTERM.

The interval is jittered so many VMs polling one forge do not beat in step.
While git or Docker cannot be reached, passes back off exponentially (with
jitter) and nothing running is touched. A heartbeat file tells the container
health check (and ``/healthz``) that the loop is alive: ``loop_health`` is the
one rule both use. Background services (the metrics endpoint) start with the
loop and stop with it.

Jobs (the backup schedule, the restore drill) run on one worker thread, so a
30-minute backup leaves the loop beating and deploying: a pass waits only
while a backup holds services stopped (it holds the pass lock then). What the
worker runs, and since when, is written into the heartbeat file, so the
health check says it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from reconciler.deploy.passes import PassOutcome, Reconciler
from reconciler.errors import StateError
from reconciler.logs import event
from reconciler.redaction import redact_url
from reconciler.state import names
from reconciler.state.files import replace_file

FIRST_BACKOFF_S = 5.0
MAX_BACKOFF_S = 300.0
JITTER = 0.1

# A job the loop runs between passes (the backup schedule, the restore drill).
Job = Callable[[], None]


class Background(Protocol):
    """Something that runs beside the loop (the HTTP endpoints): started and stopped with it."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def next_delay(outcome: PassOutcome, *, interval_s: float, failures: int) -> float:
    """Seconds until the next pass: the interval, or a growing backoff while unavailable."""
    if outcome.result == "unavailable" and failures > 0:
        ceiling = max(interval_s, MAX_BACKOFF_S)
        backoff = min(ceiling, FIRST_BACKOFF_S * 2 ** (failures - 1))
        return random.uniform(backoff / 2, backoff)
    return interval_s * random.uniform(1 - JITTER, 1 + JITTER)


def heartbeat_path(state_dir: Path) -> Path:
    return state_dir / names.HEARTBEAT


def heartbeat_age_s(state_dir: Path) -> float | None:
    try:
        return time.time() - heartbeat_path(state_dir).stat().st_mtime
    except OSError:
        return None


@dataclass(frozen=True)
class LoopHealth:
    alive: bool
    heartbeat_age_s: float | None
    message: str
    running: str | None = None  # the job the worker runs (``backup``), when one has run a while
    running_for_s: float | None = None


# A job that takes longer than this is shown as running (most calls of a job
# only check whether it is due, in milliseconds).
SHOWN_AFTER_S = 2.0


def loop_health(state_dir: Path, *, interval_s: float) -> LoopHealth:
    """Whether the daemon's loop ran recently: ``reconciler healthcheck`` and ``/healthz``.

    The loop beats every tick, but a pass or a job (a backup, a restore) holds
    it for as long as it takes; the limit leaves room for that.
    """
    age = heartbeat_age_s(state_dir)
    limit = max(3 * interval_s, 600.0)
    if age is None:
        return LoopHealth(False, None, "unhealthy: no heartbeat yet")
    running, running_for = _running_job(state_dir)
    doing = f"; {running} running for {running_for:.0f}s" if running and running_for else ""
    if age > limit:
        return LoopHealth(
            False,
            age,
            f"unhealthy: the loop has not run for {age:.0f}s{doing}",
            running,
            running_for,
        )
    return LoopHealth(True, age, f"healthy: last loop {age:.0f}s ago{doing}", running, running_for)


def _running_job(state_dir: Path) -> tuple[str | None, float | None]:
    try:
        data = json.loads(heartbeat_path(state_dir).read_text() or "{}")
    except (OSError, ValueError):
        return None, None  # an old, empty heartbeat, or one being written
    job, since = (data.get("job"), data.get("since")) if isinstance(data, dict) else (None, None)
    if not isinstance(job, str) or not isinstance(since, int | float):
        return None, None
    return job, max(0.0, time.time() - since)


class JobWorker:
    """Runs the jobs, one round at a time, on a thread of its own."""

    def __init__(self, jobs: list[Job], stopping: threading.Event) -> None:
        self.jobs = jobs
        self.stopping = stopping
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._current: tuple[str, float] | None = None  # job name, wall-clock start

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start_round(self) -> None:
        """Start a round of every job, unless the previous one still runs."""
        if self.busy or not self.jobs:
            return
        self._thread = threading.Thread(target=self._round, name="jobs", daemon=True)
        self._thread.start()

    def running(self) -> tuple[str, float] | None:
        """The job that has been running for more than ``SHOWN_AFTER_S``, and since when."""
        with self._lock:
            current = self._current
        if current is None or time.time() - current[1] < SHOWN_AFTER_S:
            return None
        return current

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _round(self) -> None:
        for job in self.jobs:
            if self.stopping.is_set():
                break
            name = getattr(job, "job_name", None) or getattr(job, "__name__", str(job))
            with self._lock:
                self._current = (str(name), time.time())
            try:
                job()
            except Exception as exc:  # a job's bug must not stop deploys
                event("job.crashed", level=40, job=name, error=repr(exc), exc_info=True)
            finally:
                with self._lock:
                    self._current = None


class Daemon:
    def __init__(
        self,
        reconciler: Reconciler,
        *,
        jobs: list[Job] | None = None,
        background: list[Background] | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.reconciler = reconciler
        self.settings = reconciler.settings
        self.jobs = jobs or []
        self.background = background or []
        self.tick_s = tick_s
        self.stopping = threading.Event()
        # Set by a stop or a pass request: what the loop's sleep waits on.
        self._wake = threading.Event()
        self._pass_requested = False
        self.worker = JobWorker(self.jobs, self.stopping)

    def stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        event("daemon.stopping", signal=signal.Signals(signum).name)
        self.stopping.set()
        self._wake.set()

    def request_pass(self) -> None:
        """Start a pass now (a webhook's push), from any thread.

        Only the loop runs passes, so they never overlap. A request during a
        pass starts one more pass after it; several during one pass still
        start one: a pass reads the branch's head when it starts, so it covers
        every push made before that.
        """
        self._pass_requested = True
        self._wake.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        event(
            "daemon.start",
            repo=redact_url(self.settings.repo),
            branch=self.settings.branch,
            interval_s=self.settings.interval_s,
            state_dir=str(self.settings.state_dir),
            pid=os.getpid(),
        )
        for service in self.background:
            service.start()
        try:
            self._loop()
        finally:
            for service in self.background:
                service.stop()
            # A job in the middle of its work is left to end with the process:
            # what a killed backup or drill leaves is made good by the next one
            # (and stopped services by the next pass, backup/stop_journal.py).
            self.worker.join(timeout_s=self.tick_s)
        event("daemon.stopped")
        return 0

    def _loop(self) -> None:
        failures = 0
        next_pass = time.monotonic()
        while not self.stopping.is_set():
            self._beat()
            if self._pass_requested:
                # Cleared before the pass: a request from now on is after its fetch.
                self._pass_requested = False
                next_pass = time.monotonic()
            if time.monotonic() >= next_pass:
                outcome = self._pass()
                failures = failures + 1 if outcome.result == "unavailable" else 0
                delay = next_delay(outcome, interval_s=self.settings.interval_s, failures=failures)
                next_pass = time.monotonic() + delay
                if failures:
                    event("daemon.backoff", level=30, failures=failures, retry_in_s=round(delay, 1))
            if not self.stopping.is_set():
                self.worker.start_round()
            self._wake.wait(max(0.0, min(self.tick_s, next_pass - time.monotonic())))
            self._wake.clear()

    def _pass(self) -> PassOutcome:
        """One pass; a bug in it is logged and backed off, never a crash loop."""
        started = time.monotonic()
        try:
            return self.reconciler.sync()
        except Exception as exc:
            event("sync.crashed", level=40, error=repr(exc), exc_info=True)
            outcome = PassOutcome("failed", "InternalError", f"internal error: {exc!r}")
            # A crash is a failed pass too: notifications and metrics hear of it.
            self.reconciler.tell_listeners(outcome, time.monotonic() - started)
            return outcome

    def _beat(self) -> None:
        path = heartbeat_path(self.settings.state_dir)
        running = self.worker.running()
        content = json.dumps({"job": running[0], "since": running[1]}) if running else ""
        try:
            # Not fsynced: it is rewritten every tick; only its mtime and the job it names matter.
            replace_file(path, content.encode(), durable=False)
        except StateError as exc:
            event("heartbeat.failed", level=30, error=str(exc))
