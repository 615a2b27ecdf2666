"""Benchmark of the core loop (issue 2). Run by hand: ``.venv/bin/python bench/noop_sync_bench.py``.

Prints, each next to a baseline measured in the same run:

1. wall time of a no-op ``reconciler sync`` of 5 services, against a no-op
   ``docker-compose up -d`` (Debian's docker-compose) of the same file, and
   where that time goes (``-X importtime`` of the same command);
2. Docker API requests of a no-op pass for 1, 10 and 50 services (target: constant);
3. the daemon's idle RSS and CPU at a 30 s poll, against an idle Python interpreter.

Needs a Docker engine and the local busybox image (images/local/build-base-images.sh).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from reconciler import labels
from reconciler.adapters.git_source import GitSource
from reconciler.adapters.swarm_engine import DockerSwarm
from reconciler.deploy.passes import Reconciler
from reconciler.settings import load_settings

IMAGE = "reconciler-local/busybox:latest"


def compose_text(services: int) -> str:
    lines = ["services:"]
    for i in range(services):
        lines += [
            f"  svc{i}:",
            f"    image: {IMAGE}",
            '    command: ["sleep", "1000000"]',
            "    stop_grace_period: 1s",
            "    environment:",
            f'      INDEX: "{i}"',
            "    volumes:",
            f"      - data{i}:/data",
        ]
    lines.append("volumes:")
    lines += [f"  data{i}:" for i in range(services)]
    return "\n".join(lines) + "\n"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(root: Path, services: int, *, name: str = "repo") -> Path:
    repo = root / f"{name}{services}"
    (repo / "desired-state").mkdir(parents=True)
    (repo / "desired-state" / "compose.yaml").write_text(compose_text(services))
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench", cwd=repo)
    return repo


def cli_env(repo: Path, state: Path, project: str, interval: str = "30") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env |= {
        "RECONCILER_REPO": str(repo),
        "RECONCILER_STATE_DIR": str(state),
        "RECONCILER_PROJECT": project,
        "RECONCILER_INTERVAL": interval,
        "RECONCILER_ENV_FILE": "/dev/null",
        "RECONCILER_LOG_FORMAT": "json",
    }
    return env


def timed(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def cleanup(client: docker.DockerClient, project: str) -> None:
    for selector in (f"{labels.PROJECT}={project}", f"com.docker.compose.project={project}"):
        for c in client.api.containers(all=True, filters={"label": selector}):
            client.api.remove_container(c["Id"], force=True)
        for n in client.api.networks(filters={"label": selector}):
            client.api.remove_network(n["Id"])
    for v in client.api.volumes().get("Volumes") or []:
        if v["Name"].startswith(f"{project}_"):
            client.api.remove_volume(v["Name"], force=True)


def with_bytecode(env: dict[str, str]) -> dict[str, str]:
    """As in the image, where pip compiled every module at install time.

    A checkout run with PYTHONDONTWRITEBYTECODE (set on some machines) would
    compile all of the reconciler's modules on every run, and the figure
    would measure the compiler.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(__file__).parents[1] / "reconciler")],
        check=True,
    )
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def import_breakdown(argv: list[str], env: dict[str, str]) -> list[tuple[str, float]]:
    """Seconds spent importing, by top-level package (ours by subpackage), biggest first."""
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True
    )
    spent: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line[12:].split("|"))
        if not self_us.isdigit():
            continue  # the header line
        parts = name.split(".")
        group = ".".join(parts[:2]) if parts[0] == "reconciler" else parts[0]
        spent[group] = spent.get(group, 0.0) + int(self_us) / 1e6
    return sorted(spent.items(), key=lambda item: -item[1])


def bench_noop_vs_compose(root: Path, client: docker.DockerClient, runs: int) -> None:
    repo = make_repo(root, 5)
    ours, theirs = "benchrec", "benchdc"
    env = with_bytecode(cli_env(repo, root / "state5", ours))
    python = [sys.executable, "-m", "reconciler"]
    compose_file = repo / "desired-state" / "compose.yaml"
    compose = ["docker-compose", "-p", theirs, "-f", str(compose_file), "up", "-d"]
    try:
        subprocess.run([*python, "sync"], env=env, check=True, capture_output=True)
        subprocess.run(compose, check=True, capture_output=True)
        # Interleaved, so a load that comes and goes weighs on both alike.
        ours_times: list[float] = []
        their_times: list[float] = []
        for _ in range(runs):
            ours_times.append(timed([*python, "sync"], env=env))
            their_times.append(timed(compose))
        imports = import_breakdown([*python, "sync"], env)
        # The same command beside a running daemon, which runs the pass for it
        # (daemon/control.py): how it is used on a VM (docker exec ... sync).
        daemon = subprocess.Popen(
            [*python, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_socket(root / "state5" / "control.sock")
            asked_times: list[float] = []
            their_times_2: list[float] = []
            for _ in range(runs):
                asked_times.append(timed([*python, "sync"], env=env))
                their_times_2.append(timed(compose))
        finally:
            daemon.terminate()
            daemon.wait(60)
    finally:
        cleanup(client, ours)
        cleanup(client, theirs)
    a, b = statistics.median(ours_times), statistics.median(their_times)
    c, d = statistics.median(asked_times), statistics.median(their_times_2)
    print(f"\n1. no-op pass, 5 services (median of {runs} runs, each row paired with its baseline)")
    print(f"   {'command':<44} {'wall s':>8} {'baseline s':>10} {'ratio':>6}")
    print(f"   {'reconciler sync, its own pass':<44} {a:8.3f} {b:10.3f} {a / b:5.2f}x")
    print(f"   {'reconciler sync, the daemon runs the pass':<44} {c:8.3f} {d:10.3f} {c / d:5.2f}x")
    print("   baseline: docker-compose up -d of the same file; target <= 0.5x")
    total = sum(seconds for _group, seconds in imports)
    ours_s = sum(seconds for group, seconds in imports if group.startswith("reconciler"))
    print(f"   imports of its own pass (-X importtime): {total:.3f} s, ours {ours_s:.3f} s")
    for group, seconds in imports[:12]:
        print(f"     {group:<32} {seconds * 1000:7.1f} ms")


def wait_for_socket(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.is_socket():
        if time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not open {path} in {timeout_s:.0f} s")
        time.sleep(0.1)


def bench_requests(root: Path, client: docker.DockerClient) -> None:
    print("\n2. Docker API requests of a no-op pass, and its time inside the daemon")
    print(f"   {'services':>8} {'requests':>9} {'pass ms':>8}  by endpoint")
    for count in (1, 10, 50):
        project = f"benchreq{count}"
        repo = make_repo(root, count, name="requests")
        settings = load_settings(cli_env(repo, root / f"state-req{count}", project))
        engine_client = docker.from_env()
        seen: list[str] = []

        def record(response: object, *_args: object, seen: list[str] = seen, **_kw: object) -> None:
            request = response.request  # type: ignore[attr-defined]
            seen.append(f"{request.method} {request.path_url.split('?')[0]}")

        engine_client.api.hooks["response"].append(record)
        source = GitSource(str(repo), branch="main", cache_dir=settings.checkouts_dir)
        reconciler = Reconciler(settings, source=source, engine=DockerSwarm(engine_client))
        try:
            first = reconciler.sync()
            assert first.ok, first.message
            seen.clear()
            started = time.perf_counter()
            again = reconciler.sync()
            pass_ms = 1000 * (time.perf_counter() - started)
            assert again.ok, again
            assert not again.changes, again
            endpoints = sorted({s.split("/", 2)[-1] for s in seen})
            print(f"   {count:>8} {len(seen):>9} {pass_ms:8.1f}  {', '.join(endpoints)}")
        finally:
            cleanup(client, project)
            engine_client.close()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _idle_profile(proc: subprocess.Popen[bytes], seconds: float) -> tuple[float, float]:
    start_cpu, start = _cpu_s(proc.pid), time.monotonic()
    peak = 0
    while time.monotonic() - start < seconds:
        peak = max(peak, _rss_kb(proc.pid))
        time.sleep(1)
    cpu = _cpu_s(proc.pid) - start_cpu
    return peak / 1024, 100 * cpu / (time.monotonic() - start)


def bench_idle(root: Path, client: docker.DockerClient, seconds: float) -> None:
    repo = make_repo(root, 5, name="idle")
    project = "benchidle"
    env = cli_env(repo, root / "state-idle", project, interval="30")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    baseline = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"],
    )
    try:
        time.sleep(20)  # the first pass converges
        rss, cpu = _idle_profile(daemon, seconds)
        base_rss, base_cpu = _idle_profile(baseline, 5)
    finally:
        daemon.terminate()
        daemon.wait(60)
        baseline.kill()
        baseline.wait()
        cleanup(client, project)
    print(f"\n3. idle daemon at a 30 s poll, 5 services, over {seconds:.0f} s")
    print(f"   {'process':<34} {'peak RSS MB':>11} {'CPU %':>7}")
    print(f"   {'reconciler run':<34} {rss:11.1f} {cpu:7.2f}")
    print(f"   {'idle python3 (baseline)':<34} {base_rss:11.1f} {base_cpu:7.2f}")
    print("   targets: <= 80 MB, <= 1 % CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=95)
    args = parser.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_noop_vs_compose(root, client, args.runs)
        bench_requests(root, client)
        bench_idle(root, client, args.idle_seconds)


if __name__ == "__main__":
    main()
