"""Benchmark of deploy on push (issue 14 item 4): ``git push`` returning to the new page served.

One run, one stack, one daemon: the real ``reconciler run`` in a child
process, following a bare repository served by ``git daemon`` on loopback, on
the real Docker engine. The stack is two services of the local busybox image:
``web`` (busybox httpd on 127.0.0.1, its page written by its command) and
``other`` (a sleeper that no change touches). Each change is a commit that
changes web's page text, so one service is recreated.

Measured, each next to the baseline of the same run:

1. webhook: ``git push``, then the signed GitHub-style push event a forge
   would send (``X-Hub-Signature-256``) to ``POST /hooks/push``; the time
   from the push returning until ``curl``-like GETs of the page read the new
   text (every 10 ms), the hook's answer time, and the pass's own duration
   (the daemon's ``sync.done`` log event). Target: <= 5 s.
2. the same, while 200 connections trickle header bytes at the daemon's
   endpoints (the hostile clients of issue 14; the server caps and times them out);
3. baseline, polling: the same change with no webhook, found by the daemon's
   poll at its interval (``--interval``, 60 s by default: the product's
   default), a few runs, each pushed at a random moment of the poll's cycle
   (a wait of up to one interval first), and the expectation
   a poll gives: half an interval plus the pass on average, the jittered
   interval (+10 %) plus the pass at worst.

Run by hand as root on a machine with Docker (not in CI), from the repository's root:

    PYTHONPATH=. .venv/bin/python bench/webhook_bench.py                  # about 5 minutes
    PYTHONPATH=. .venv/bin/python bench/webhook_bench.py --poll-runs 1    # quicker

Needs: a Docker engine with ``reconciler-local/busybox:latest``
(images/local/build-base-images.sh) and git. Everything it makes carries
the project label of a bench id and is removed at the end, also on failure.
Progress goes to stderr, the table and a JSON line to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import docker

from reconciler import labels
from reconciler.decide.webhooks import signature_of

IMAGE = "reconciler-local/busybox:latest"
SECRET = "bench-" + uuid.uuid4().hex

COMPOSE = """\
services:
  web:
    image: {image}
    # sh as PID 1 stops at once on SIGTERM (httpd as PID 1 would ignore it).
    command: ["sh", "-c", "{script}"]
    ports: ["127.0.0.1:{port}:8080"]
    stop_grace_period: 2s
  other:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"]
    stop_grace_period: 2s
"""
WEB_SCRIPT = (
    "trap 'exit 0' TERM; mkdir -p /www; echo {text} > /www/index.html; "
    "httpd -f -p 8080 -h /www & wait"
)


def log(message: str) -> None:
    print(f"[webhook_bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class Stack:
    """The work repository, its remote behind ``git daemon``, and the page's port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote = root / "served" / "site.git"
        self.remote.parent.mkdir(parents=True)
        git("init", "-q", "--bare", "-b", "main", str(self.remote), cwd=root)
        self.work = root / "work"
        git("init", "-q", "-b", "main", str(self.work), cwd=root)
        git("remote", "add", "origin", str(self.remote), cwd=self.work)
        self.web_port = free_port()
        self.git_port = free_port()
        self.git_daemon = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                f"--base-path={self.remote.parent}",
                "--listen=127.0.0.1",
                f"--port={self.git_port}",
                str(self.remote.parent),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"git://127.0.0.1:{self.git_port}/site.git"

    def commit(self, text: str) -> str:
        folder = self.work / "desired-state"
        folder.mkdir(exist_ok=True)
        script = WEB_SCRIPT.format(text=text)
        compose = COMPOSE.format(image=IMAGE, script=script, port=self.web_port)
        (folder / "compose.yaml").write_text(compose)
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", f"page: {text}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self) -> None:
        git("push", "-q", "origin", "main", cwd=self.work)

    def served(self) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.web_port}/"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return str(answer.read().decode().strip())
        except (OSError, http.client.HTTPException):  # restarting: refused, reset, cut short
            return None

    def stop(self) -> None:
        if self.git_daemon.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.git_daemon.pid, signal.SIGTERM)
            self.git_daemon.wait(10)


class Daemon:
    """``reconciler run`` in a child process, its JSON log in a file."""

    def __init__(self, root: Path, *, url: str, project: str, interval: float) -> None:
        self.metrics_port = free_port()
        self.log_path = root / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        env |= {
            "RECONCILER_REPO": url,
            "RECONCILER_STATE_DIR": str(root / "state"),
            "RECONCILER_PROJECT": project,
            "RECONCILER_INTERVAL": str(interval),
            "RECONCILER_ENV_FILE": "/dev/null",
            "RECONCILER_LOG_FORMAT": "json",
            "RECONCILER_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "RECONCILER_WEBHOOK_SECRET": SECRET,
        }
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run"], env=env, stdout=out, stderr=out
            )

    def hook(self, commit: str) -> tuple[int, float]:
        """Send the push event a forge sends: (status, seconds until answered)."""
        body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.metrics_port}/hooks/push",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": "sha256=" + signature_of(SECRET, body),
            },
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        return status, time.perf_counter() - started

    def pass_of(self, commit: str) -> float | None:
        """The duration of the pass that applied ``commit`` (its ``sync.done`` event)."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if (entry.get("event"), entry.get("commit")) == ("sync.done", commit) and entry.get(
                    "changes"
                ):
                    return float(entry["duration_s"])
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Tricklers:
    """``count`` connections sending a header byte every 0.2 s, reconnecting when cut."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.open: list[socket.socket] = []
        self.cut = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Tricklers:
        self.thread.start()
        deadline = time.monotonic() + 30
        while len(self.open) < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)
        for conn in self.open:
            conn.close()

    def _run(self) -> None:
        while not self.stopping.is_set():
            while len(self.open) < self.count and not self.stopping.is_set():
                try:
                    conn = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    conn.sendall(b"POST /hooks/push HTTP/1.1\r\nX-Slow: ")
                except OSError:
                    self.stopping.wait(0.05)
                    continue
                self.open.append(conn)
            for conn in list(self.open):
                try:
                    conn.sendall(b"x")
                except OSError:
                    self.cut += 1
                    conn.close()
                    self.open.remove(conn)
            self.stopping.wait(0.2)


def wait_served(stack: Stack, text: str, *, timeout_s: float) -> float | None:
    """perf_counter() when ``text`` is first served; None on timeout."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if stack.served() == text:
            return time.perf_counter()
        time.sleep(0.01)
    return None


Row = dict[str, float | str | None]


def one_change(stack: Stack, daemon: Daemon, label: str, *, hook: bool, timeout_s: float) -> Row:
    text = f"{label}-{uuid.uuid4().hex[:8]}"
    commit = stack.commit(text)
    stack.push()
    pushed = time.perf_counter()
    ack: float | None = None
    if hook:
        status, ack = daemon.hook(commit)
        if status != 202:
            raise SystemExit(f"the hook answered {status}; see {daemon.log_path}")
    served = wait_served(stack, text, timeout_s=timeout_s)
    if served is None:
        raise SystemExit(f"{text} was not served within {timeout_s:.0f}s; see {daemon.log_path}")
    # The pass's own duration is read from the log at the end: it logs after its
    # last steps (prune, image GC), which may end after the page is served.
    return {"latency_s": served - pushed, "ack_s": ack, "pass_s": None, "commit": commit}


def cleanup(project: str) -> None:
    client = docker.from_env()
    try:
        selector = f"{labels.PROJECT}={project}"
        for c in client.api.containers(all=True, filters={"label": selector}):
            client.api.remove_container(c["Id"], force=True)
        for n in client.api.networks(filters={"label": selector}):
            client.api.remove_network(n["Id"])
    finally:
        client.close()


def seconds(row: Row) -> str:
    return f"{float(row['latency_s'] or 0):.2f}s"


def numbers(rows: list[Row], key: str) -> list[float]:
    return [v for r in rows if isinstance(v := r[key], float)]


def median(values: list[float], *, scale: float = 1.0, digits: int = 2) -> str:
    return f"{statistics.median(values) * scale:.{digits}f}" if values else "-"


def maximum(values: list[float]) -> str:
    return f"{max(values):.2f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hook-runs", type=int, default=5)
    parser.add_argument("--poll-runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=60.0, help="the poll interval (s)")
    parser.add_argument("--tricklers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=14, help="of the poll runs' random offsets")
    args = parser.parse_args()
    project = f"benchhook{uuid.uuid4().hex[:6]}"
    rows: dict[str, list[Row]] = {"hook": [], "hostile": [], "poll": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stack = Stack(root)
        daemon: Daemon | None = None
        try:
            stack.commit("v0")
            stack.push()
            daemon = Daemon(root, url=stack.url, project=project, interval=args.interval)
            log(f"daemon started (poll every {args.interval:.0f}s); waiting for the first deploy")
            if wait_served(stack, "v0", timeout_s=120) is None:
                raise SystemExit(f"the first deploy did not serve; see {daemon.log_path}")
            for n in range(args.hook_runs):
                rows["hook"].append(one_change(stack, daemon, f"hook{n}", hook=True, timeout_s=60))
                log(f"webhook {n + 1}/{args.hook_runs}: {seconds(rows['hook'][-1])}")
            with Tricklers(daemon.metrics_port, args.tricklers) as tricklers:
                log(f"{len(tricklers.open)} tricklers connected")
                for n in range(3):
                    rows["hostile"].append(
                        one_change(stack, daemon, f"hostile{n}", hook=True, timeout_s=60)
                    )
                    log(f"webhook under tricklers {n + 1}/3: {seconds(rows['hostile'][-1])}")
                hanging = len(tricklers.open)
            rng = random.Random(args.seed)
            for n in range(args.poll_runs):
                # A push comes at any moment of the poll's cycle, not right after
                # a pass (the previous change's): wait a random part of an interval.
                time.sleep(rng.uniform(0, args.interval))
                timeout = args.interval * 1.2 + 60
                rows["poll"].append(
                    one_change(stack, daemon, f"poll{n}", hook=False, timeout_s=timeout)
                )
                log(f"poll {n + 1}/{args.poll_runs}: {seconds(rows['poll'][-1])}")
        except BaseException:
            if daemon is not None:  # the log goes with the temporary folder: show its end
                lines = daemon.log_path.read_text(errors="replace").splitlines()
                print("\n".join(lines[-40:]), file=sys.stderr)
            raise
        finally:
            if daemon is not None:
                daemon.stop()
                for row in (r for rs in rows.values() for r in rs):
                    row["pass_s"] = daemon.pass_of(str(row["commit"]))
            cleanup(project)
            stack.stop()
    passes = [float(v) for rs in rows.values() for r in rs if isinstance(v := r["pass_s"], float)]
    pass_median = statistics.median(passes) if passes else 0.0
    expected_mean = args.interval / 2 + pass_median
    expected_worst = args.interval * 1.1 + pass_median
    print("\npush -> new page served, one service of two recreated")
    print(
        f"   {'how':<40} {'runs':>4} {'median s':>9} {'max s':>7} {'pass s':>7} {'hook ack ms':>11}"
    )
    for key, name in (
        ("hook", "webhook"),
        ("hostile", f"webhook, {args.tricklers} tricklers hanging on"),
        ("poll", f"polling every {args.interval:.0f} s (baseline)"),
    ):
        latency = numbers(rows[key], "latency_s")
        pass_s = numbers(rows[key], "pass_s")
        acks = numbers(rows[key], "ack_s")
        print(
            f"   {name:<40} {len(rows[key]):>4} {median(latency):>9} {maximum(latency):>7} "
            f"{median(pass_s):>7} {median(acks, scale=1000, digits=1):>11}"
        )
    print(
        f"   {'polling, expected: interval/2 + pass':<40} {'':>4} {expected_mean:9.2f} "
        f"{expected_worst:7.2f}   (max: 1.1 x interval + pass)"
    )
    hook_median = statistics.median(numbers(rows["hook"], "latency_s"))
    print(
        f"   target: <= 5 s. The webhook's median is {expected_mean / hook_median:.0f}x below "
        "the expected poll's."
    )
    print(f"   tricklers still connected at the end: {hanging}")
    print(f"   load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps({"bench": "webhook", "interval_s": args.interval, "rows": rows}))


if __name__ == "__main__":
    main()
