"""Benchmark: the real ``run_backup`` against restic run directly and ``tar | zstd | aws s3 cp -``.

One run, the same data, one local S3 server (moto, over HTTP on loopback) for
all three. The data is a live MariaDB container (a shop's ``orders`` table,
``--db-mb`` of dump) and a Docker volume of mixed files (``--volume-mb``:
text pages and styles, compressible logs and exports, incompressible media,
and ``--tiny-files`` files of under 1 KB, as a site's caches and thumbnails).

- ours: ``reconciler.backup.backing_up.run_backup``, the function the product
  calls, with a ``BackupPolicy`` of the volume and the database, in a child
  process so that its peak RSS is its own. It backs the volume up with restic
  in a helper container (``reconciler-local/restic:local``, the volume
  read-only, restic's cache in a named volume, the host's network to reach
  moto) and the database as ``mariadb-dump`` through ``docker exec`` fed to a
  local ``restic backup --stdin``, then writes its manifest snapshot;
- restic: ``restic backup VOLUME_DIR`` and ``docker exec DB mariadb-dump ... |
  restic backup --stdin``, run by a shell on the host against its own
  repository, its cache in a folder kept between backups;
- tar: ``tar -cf - VOLUME_DIR | zstd -3 -T0 | aws s3 cp -`` and ``docker exec
  DB mariadb-dump ... | zstd -3 -T0 | aws s3 cp -``: a full copy every day
  (what the old format stored), one kept per day.

Measured, each step run by ours, then restic, then tar, the page cache
warmed with the volume's files before each step: (1) the first backup;
(2) a second backup of unchanged data; (3) one backup a day for days 2..7 of
data that changes 1 % a day (files making up 1 % of the volume's bytes
rewritten; 1 % of the orders: half new, half updates of the newest 5 %, as a
shop's orders change), dated a day apart (``clock=`` for ours, ``--time`` for
restic direct), then retention on day 7 (ours: what ``run_backup`` does with
the policy's keep-daily 7, weekly 4, monthly 12; restic: ``forget
--keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune``), timed on its
own, and the bytes stored in the bucket after the 7 days against one copy
(the bytes after the first backup); (4) peak RSS: of each command and its
children (GNU time's ``%M``, the largest process), and for ours separately of
restic in the helper (the highest ``total_rss`` of its memory cgroup, read
every 0.1 s: cgroup v1 keeps no peak of RSS alone). The table shows ours
against restic with the targets of issue 10 (first backup <= 1.0x restic's,
second <= 1.2x restic's second, stored after 7 days <= 1.3x one copy, peak
RSS <= 300 MB) and ours against tar; below it, where ours spends its time
(each restic command ``run_backup`` ran, in the helper or local, with
restic's own ``total_duration`` of each backup), what a helper container
costs that runs only ``restic version``, and the load average (the machine
may be shared). Progress goes to stderr, the table and a JSON line to stdout.

Run by hand as root on a machine with Docker (not in CI), from the
repository's root:

    PYTHONPATH=. .venv/bin/python bench/backup_bench.py       # 1000 MiB of files, 200 MiB dump
    PYTHONPATH=. .venv/bin/python bench/backup_bench.py --volume-mb 100 --db-mb 20   # quick

Needs: a Docker engine with the local images ``reconciler-local/busybox:latest``,
``reconciler-local/mariadb:local`` and ``reconciler-local/restic:local``
(images/local/build-base-images.sh); restic, zstd and GNU time
(``/usr/bin/time``) on the host; moto_server and aws (awscli, the test
extras) beside the Python that runs it; root, since the volume is written
and read through its mountpoint. The full size takes about 6 minutes on 2
CPUs, and moto keeps about 8 GB in temporary files meanwhile (seven tar
copies and two repositories).
Everything it makes carries the label ``dev.reconciler.project=<bench id>``
and is removed at the end, also when it fails or is interrupted (Ctrl-C,
SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler import labels  # noqa: E402
from reconciler.adapters.mariadb import DUMP_COMMAND  # noqa: E402
from reconciler.model.backup_policy import BackupPolicy, DatabaseBackup, VolumeBackup  # noqa: E402
from reconciler.model.desired import DesiredState, Mount, ServiceSpec, VolumeSpec  # noqa: E402

BUSYBOX = "reconciler-local/busybox:latest"
MARIADB = "reconciler-local/mariadb:local"
RESTIC_IMAGE = "reconciler-local/restic:local"  # images/local/build-base-images.sh
PASSWORD = "bench-root"
KEY = "bench-key-" + "k" * 22  # the restic repositories' password (RECONCILER_BACKUP_KEY)
HOST = "bench"  # restic direct's --host
MiB = 1024 * 1024
DAYS = 7
RSS_TARGET = 300 * 1000 * 1000  # issue 10: peak RSS <= 300 MB
DUMP = " ".join(DUMP_COMMAND)  # the product's own mariadb-dump command line
STARTED = time.monotonic()

WORDS = (  # noqa: SIM905 - a sentence reads better than 80 quoted words
    "the of and to in is for on that with as was by at from this be are or an it not "
    "order customer product price shipping cart checkout invoice payment total tax "
    "function return echo array string null true false class public private static "
    "div span href src style color margin padding border width height font display "
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud"
).split()


def progress(message: str) -> None:
    """One line for the person watching, on stderr, with the time since the start."""
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the data --------------------------------------------------------------------------------


def text_block(rng: random.Random, size: int) -> bytes:
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(6, 18))) + f" {rng.randint(0, 99999)}\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


def populate(folder: Path, total: int, tiny: int, seed: int = 1) -> tuple[int, int]:
    """Write about ``total`` bytes of mixed files and ``tiny`` tiny ones; return (files, bytes)."""
    rng = random.Random(seed)
    written = 0
    files = 0
    # A pool of text to cut pages from: building fresh random text for every
    # byte would make the benchmark mostly a text generator.
    pool = text_block(rng, 8 * MiB)
    for index in range(tiny):  # caches, sessions, thumbnails' metadata, .htaccess
        bucket = folder / "cache" / f"{index % 100:02d}"
        bucket.mkdir(parents=True, exist_ok=True)
        size = rng.randint(20, 900)
        start = rng.randint(0, len(pool) - size)
        (bucket / f"c{index}.{rng.choice(['json', 'txt', 'meta'])}").write_bytes(
            pool[start : start + size]
        )
        written += size
        files += 1
    while written < total:
        kind = rng.random()
        bucket = folder / f"d{files // 200:04d}"
        bucket.mkdir(parents=True, exist_ok=True)
        if kind < 0.55:  # many small pages, styles, scripts
            size = rng.randint(1_000, 60_000)
            start = rng.randint(0, len(pool) - size)
            data = pool[start : start + size]
            name = f"page{files}.{rng.choice(['php', 'html', 'css', 'js'])}"
        elif kind < 0.75:  # logs and exports: larger, compressible
            size = rng.randint(500_000, 4 * MiB)
            start = rng.randint(0, len(pool) - size)
            data = pool[start : start + size]
            name = f"export{files}.csv"
        else:  # photos, PDFs, archives: incompressible
            size = rng.randint(100_000, 6 * MiB)
            data = os.urandom(size)
            name = f"upload{files}.jpg"
        (bucket / name).write_bytes(data)
        written += len(data)
        files += 1
    (folder / "empty-dir").mkdir(exist_ok=True)
    return files, written


def change_site(folder: Path, rng: random.Random, fraction: float) -> int:
    """Rewrite files that make up ``fraction`` of the volume's bytes; return the bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    pool = text_block(rng, 2 * MiB)
    changed = 0
    for path in rng.sample(files, len(files)):
        if changed >= total * fraction:
            break
        size = path.stat().st_size
        if path.suffix == ".jpg":
            data = os.urandom(size)
        else:
            start = rng.randint(0, max(0, len(pool) - size))
            data = (pool[start : start + size] * (size // max(1, len(pool)) + 1))[:size]
        path.write_bytes(data)
        changed += size
    return changed


# An order: a customer, a total, a note of MD5s (hex: about half compressible), a date.
ORDER_COLUMNS = "customer, total, note, created"
ORDER_VALUES = (
    "CONCAT('customer-', FLOOR(RAND()*100000)), RAND()*500, "
    "CONCAT_WS(' ', MD5(RAND()), MD5(RAND()), 'order for', MD5(RAND()), MD5(RAND()),"
    " MD5(RAND()), 'shipped', MD5(RAND()), MD5(RAND())),"
    " NOW() - INTERVAL FLOOR(RAND()*900) DAY"
)
DUMP_BYTES_PER_ROW = 310  # of mariadb-dump's output, measured


def wait_healthy(container: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if container.exec_run(["healthcheck.sh"]).exit_code == 0:
            return
        time.sleep(0.5)
    raise SystemExit(f"{container.name} did not become healthy")


def run_sql(container: Any, sql: str) -> str:
    result = container.exec_run(
        ["mariadb", "--user=root", "--batch", "--skip-column-names", "-e", sql],
        environment={"MYSQL_PWD": PASSWORD},
    )
    if result.exit_code != 0:
        raise SystemExit(result.output.decode())
    return str(result.output.decode()).strip()


def insert_orders(container: Any, count: int) -> None:
    """``count`` new orders, in statements of at most 100,000 rows (MariaDB's seq engine)."""
    while count > 0:
        batch = min(count, 100_000)
        run_sql(
            container,
            f"USE shop; INSERT INTO orders ({ORDER_COLUMNS}) SELECT {ORDER_VALUES} "
            f"FROM seq_1_to_{batch};",
        )
        count -= batch


def fill_database(container: Any, megabytes: int) -> int:
    """Grow a table until its dump is about ``megabytes``; return the row count."""
    rows = max(1, megabytes * MiB // DUMP_BYTES_PER_ROW)
    run_sql(
        container,
        "CREATE DATABASE IF NOT EXISTS shop; USE shop;"
        "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer VARCHAR(64),"
        " total DECIMAL(10,2), note TEXT, created DATETIME);",
    )
    insert_orders(container, rows)
    return rows


def change_database(container: Any, rows: int, rng: random.Random, fraction: float) -> int:
    """A shop's day: half of the change new orders, half updates of the newest 5 %.

    Returns the new row count.
    """
    count = int(rows * fraction)
    updates = count // 2
    run_sql(
        container,
        f"SET @newest = (SELECT MAX(id) FROM shop.orders) - {max(1, rows // 20)};"
        f"UPDATE shop.orders SET total = RAND()*500, note = CONCAT_WS(' ', MD5(RAND()),"
        " MD5(RAND()), 'order for', MD5(RAND()), MD5(RAND()), MD5(RAND()), 'changed',"
        f" MD5(RAND()), MD5(RAND())) WHERE id > @newest ORDER BY RAND({rng.randint(0, 1 << 30)})"
        f" LIMIT {updates};",
    )
    insert_orders(container, count - updates)
    return rows + count - updates


def dump_size(db: str) -> int:
    out = subprocess.run(
        ["sh", "-c", f"docker exec -e MYSQL_PWD={PASSWORD} {db} {DUMP} | wc -c"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out)


# --- ours, in a child process ---------------------------------------------------------------


def desired_state(project: str, with_db: bool) -> DesiredState:
    services = {
        "web": ServiceSpec(
            name="web",
            image=BUSYBOX,
            command=("sleep", "1000000"),
            mounts=(Mount(type="volume", source=f"{project}_site", target="/data"),),
            stop_grace_period_s=1,
        )
    }
    if with_db:
        services["db"] = ServiceSpec(
            name="db",
            image=MARIADB,
            environment={"MARIADB_ROOT_PASSWORD": PASSWORD},
            mounts=(Mount(type="volume", source=f"{project}_dbdata", target="/var/lib/mysql"),),
        )
    return DesiredState(
        project=project,
        services=services,
        networks={},
        volumes={
            "site": VolumeSpec(key="site", name=f"{project}_site"),
            "dbdata": VolumeSpec(key="dbdata", name=f"{project}_dbdata"),
        },
    )


def ours_child(spec: dict[str, Any]) -> int:
    """The measured process: one backup (or the untimed ``restic init``) by the product's code."""
    # Ended by the bench (a failure elsewhere, Ctrl-C): the finally blocks remove the helper.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from reconciler.adapters import restic
    from reconciler.backup import backing_up
    from reconciler.backup.backup_target import open_target

    state_dir = Path(spec["state_dir"])
    policy = BackupPolicy(
        target=spec["target"],
        volumes=(VolumeBackup(name="site"),),
        databases=(DatabaseBackup(service="db"),) if spec["db"] else (),
    )
    target = open_target(
        policy.target, {**os.environ, "RECONCILER_BACKUP_KEY": KEY}, state_dir=state_dir
    )
    if spec.get("init"):
        # Made untimed, like the direct repository's ``restic init``.
        print(json.dumps({"made": target.repository().ensure()}))
        return 0

    # Instruments only: each restic command run_backup runs, and its retention, timed.
    commands: list[tuple[str, float, float]] = []
    run_restic = restic.Repository._run

    def timed_run(self: restic.Repository, what: str, args: list[str], **kwargs: Any) -> Any:
        where = "local" if isinstance(self.runner, restic.LocalRunner) else "in the helper"
        label = what
        if what == "backup":  # which part: the stdin file's name, or the folder
            stdin = args.index("--stdin-filename") + 1 if "--stdin-filename" in args else 0
            label = f"backup {args[stdin] if stdin else args[-1]}"
        begun = time.monotonic()
        own = 0.0  # restic's own total_duration of a backup, from its JSON summary
        try:
            result = run_restic(self, what, args, **kwargs)
            for line in result.stdout_lines if what == "backup" else ():
                with contextlib.suppress(ValueError, AttributeError):
                    if json.loads(line).get("message_type") == "summary":
                        own = float(json.loads(line).get("total_duration", 0.0))
            return result
        finally:
            commands.append((f"{label} ({where})", time.monotonic() - begun, own))

    restic.Repository._run = timed_run  # type: ignore[method-assign]
    retention_s = [0.0]
    prune = backing_up.prune

    def timed_prune(*args: Any, **kwargs: Any) -> Any:
        begun = time.monotonic()
        try:
            return prune(*args, **kwargs)
        finally:
            retention_s[0] += time.monotonic() - begun

    backing_up.prune = timed_prune

    when = datetime.fromisoformat(spec["time"])
    begun = time.monotonic()

    def clock() -> datetime:  # the bench's day, moving on as the real clock does
        return when + timedelta(seconds=time.monotonic() - begun)

    result = backing_up.run_backup(
        client=docker.from_env(timeout=600),
        target=target,
        desired=desired_state(spec["project"], spec["db"]),
        policy=policy,
        state_dir=state_dir,
        helper_image=RESTIC_IMAGE,
        prune_after=spec["retention"],
        clock=clock,
    )
    seconds = time.monotonic() - begun
    print(
        json.dumps(
            {
                "seconds": seconds - retention_s[0],
                "retention_s": retention_s[0],
                "added": {f"{a.kind} {a.name}": a.size for a in result.manifest.artifacts},
                "pruned": list(result.pruned),
                "commands": commands,
                "self_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "restic_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
            }
        )
    )
    return 0


def helper_cost(client: docker.DockerClient, project: str, rounds: int = 3) -> float:
    """Median seconds of a helper that runs only ``restic version``: a helper's fixed cost."""
    from reconciler.adapters.restic_helper import HelperRunner

    runner = HelperRunner(
        client,
        image=RESTIC_IMAGE,
        project=project,
        volumes=[f"{project}_site"],
        mount_names={f"{project}_site": "site"},
        network_mode="host",
        purpose="backup",
    )
    times = []
    for _ in range(rounds):
        begun = time.monotonic()
        if runner.run(["version"], env={}, timeout_s=120).returncode:
            raise SystemExit(f"restic version in a helper ({RESTIC_IMAGE}) failed")
        times.append(time.monotonic() - begun)
    return sorted(times)[len(times) // 2]


class HelperPeak:
    """The highest total_rss of the project's helper containers while it runs."""

    def __init__(self, client: docker.DockerClient, project: str) -> None:
        self.client = client
        self.project = project
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HelperPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        # The engine is asked for the helpers every 0.3 s, their cgroups read every 0.1 s:
        # on 2 CPUs, asking dockerd 10 times a second would slow down what is measured.
        selector = {"label": [f"{labels.PROJECT}={self.project}", labels.HELPER]}
        ids: list[str] = []
        tick = 0
        while not self._stop.wait(0.1):
            if tick % 3 == 0:
                with contextlib.suppress(docker.errors.DockerException, OSError):
                    ids = [raw["Id"] for raw in self.client.api.containers(filters=selector)]
            tick += 1
            for ident in ids:
                for stat in (
                    Path(f"/sys/fs/cgroup/memory/docker/{ident}/memory.stat"),
                    Path(f"/sys/fs/cgroup/system.slice/docker-{ident}.scope/memory.stat"),
                ):
                    with contextlib.suppress(OSError, ValueError):
                        values = dict(line.split() for line in stat.read_text().splitlines())
                        rss = int(values.get("total_rss", values.get("anon", 0)))
                        self.peak = max(self.peak, rss)


# --- running and timing ---------------------------------------------------------------------


def timed_child(
    command: list[str], env: dict[str, str], scratch: Path
) -> tuple[float, int, int, str]:
    """(wall seconds, peak RSS in bytes of it and its children, exit status, stdout).

    Under GNU time: a child forked from this process would start its RSS high
    mark at this process's (Linux carries it over exec). In a process group
    of its own, ended whole when this process is interrupted.
    """
    out_path, rss_path = scratch / "child.out", scratch / "child.rss"
    started = time.monotonic()
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", str(rss_path), *command],
            env=env,
            stdout=out,
            start_new_session=True,
        )
        try:
            status = process.wait()
        except BaseException:
            end_group(process)
            raise
    seconds = time.monotonic() - started
    rss = int(rss_path.read_text().strip().splitlines()[-1]) * 1024
    return seconds, rss, status, out_path.read_text()


def end_group(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(15)
            return
        except subprocess.TimeoutExpired:
            continue


def shell(script: str, env: dict[str, str], scratch: Path, what: str) -> tuple[float, int]:
    """``bash -o pipefail -c script``: (wall seconds, peak RSS); a failure ends the bench."""
    seconds, rss, status, _ = timed_child(["bash", "-o", "pipefail", "-c", script], env, scratch)
    if status:
        raise SystemExit(f"{what} failed with exit status {status}")
    return seconds, rss


def run_ours(
    spec: dict[str, Any], env: dict[str, str], scratch: Path
) -> tuple[dict[str, Any], int]:
    """Run the ours child; its last stdout line and the peak RSS (bytes) of it and its children."""
    command = [sys.executable, str(Path(__file__).resolve()), "--ours-child", json.dumps(spec)]
    _, rss, status, out = timed_child(command, env, scratch)
    if status:
        raise SystemExit(f"ours (run_backup) failed with exit status {status}")
    return json.loads(out.strip().splitlines()[-1]), rss


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    log_fd, log_path = tempfile.mkstemp(prefix="moto-bench-", suffix=".log")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log_fd,
        stderr=log_fd,
        start_new_session=True,
    )
    os.close(log_fd)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.unlink(log_path)


def object_sizes(client: Any, bucket: str, prefix: str) -> int:
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += sum(int(o["Size"]) for o in page.get("Contents", []))
    return total


def remove_bench(client: docker.DockerClient, project: str) -> None:
    """Every container and volume labelled with the bench's project (helpers, caches too)."""
    selector = {"label": f"{labels.PROJECT}={project}"}
    with contextlib.suppress(docker.errors.DockerException):
        for raw in client.api.containers(all=True, filters=selector):
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(raw["Id"], force=True, v=True)
    with contextlib.suppress(docker.errors.DockerException):
        for raw in client.api.volumes(filters=selector).get("Volumes") or []:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_volume(raw["Name"], force=True)


# --- the run --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--volume-mb", "--site-mb", type=int, default=1000, help="MiB of files (default 1000)"
    )
    parser.add_argument(
        "--db-mb", "--dump-mb", type=int, default=200, help="MiB of dump (default 200; 0: no db)"
    )
    parser.add_argument(
        "--tiny-files", type=int, default=3000, help="files under 1 KB (default 3000)"
    )
    parser.add_argument("--ours-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_child:
        return ours_child(json.loads(args.ours_child))
    # SIGTERM ends the bench as Ctrl-C does: through the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    missing = [n for n in ("zstd", "restic", "/usr/bin/time") if shutil.which(n) is None]
    if aws is None or missing:
        raise SystemExit(f"needs aws (awscli), zstd, restic and GNU time; missing {missing or aws}")
    client = docker.from_env(timeout=600)
    for image in (BUSYBOX, MARIADB, RESTIC_IMAGE):
        client.images.get(image)  # images/local/build-base-images.sh
    project = "bench" + uuid.uuid4().hex[:6]
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    scratch = Path(tempfile.mkdtemp(prefix="backup-bench-"))
    rng = random.Random(7)
    with_db = args.db_mb > 0
    progress(f"bench {project}: label {labels.PROJECT}={project}, scratch {scratch}")
    try:
        desired = desired_state(project, with_db)
        for volume in desired.volumes.values():
            client.volumes.create(volume.name, labels={labels.PROJECT: project})
        mountpoint = Path(client.volumes.get(f"{project}_site").attrs["Mountpoint"])
        client.containers.run(
            BUSYBOX,
            ["sleep", "1000000"],
            name=labels.container_name(project, "web"),
            detach=True,
            labels={labels.PROJECT: project, labels.SERVICE: "web"},
            volumes={f"{project}_site": {"bind": "/data", "mode": "rw"}},
        )
        db_name = labels.container_name(project, "db")
        db = None
        if with_db:
            db = client.containers.run(
                MARIADB,
                name=db_name,
                detach=True,
                environment={"MARIADB_ROOT_PASSWORD": PASSWORD},
                labels={labels.PROJECT: project, labels.SERVICE: "db"},
                volumes={f"{project}_dbdata": {"bind": "/var/lib/mysql", "mode": "rw"}},
            )
        progress(f"writing {args.volume_mb} MB of files and {args.tiny_files} tiny files")
        files, size = populate(mountpoint, args.volume_mb * MiB, args.tiny_files)
        progress(f"volume: {files} files, {size / MiB:.0f} MiB")
        rows = 0
        dump_bytes = 0
        if db is not None:
            wait_healthy(db)
            progress(f"filling the database to about {args.db_mb} MB of dump")
            rows = fill_database(db, args.db_mb)
            dump_bytes = dump_size(db_name)
            progress(f"database: {rows} orders, a dump of {dump_bytes / MiB:.0f} MiB")

        with moto_server() as endpoint:
            os.environ.update(
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_ENDPOINT_URL_S3=endpoint,
                AWS_ENDPOINT_URL=endpoint,
                AWS_CONFIG_FILE=os.devnull,
                AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            )
            env = dict(os.environ)
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            s3.create_bucket(Bucket=bucket)
            progress(f"moto at {endpoint}, bucket {bucket}: ours/, restic/, tar/")
            restic_cache = scratch / "restic-cache"
            restic_env = dict(
                env, RESTIC_PASSWORD=KEY, RESTIC_REPOSITORY=f"s3:{endpoint}/{bucket}/restic"
            )
            subprocess.run(["restic", "init", "--repository-version", "2"], env=restic_env,
                           check=True, capture_output=True)  # fmt: skip
            ours_spec = {
                "target": f"s3://{bucket}/ours",
                "project": project,
                "state_dir": str(scratch / "ours-state"),
                "db": with_db,
            }
            run_ours({**ours_spec, "init": True}, env, scratch)  # untimed, as restic init
            helper_s = helper_cost(client, project)
            progress(f"a helper container running only restic version: {helper_s:.2f} s")
            load = [os.getloadavg()[0]]
            start = datetime.now(UTC) - timedelta(days=DAYS)
            results: dict[str, dict[str, Any]] = {"ours": {}, "restic": {}, "tar": {}}
            rss: dict[str, int] = {"ours": 0, "helper": 0, "restic": 0, "tar": 0}
            detail: dict[str, Any] = {}
            dump_cmd = f"docker exec -e MYSQL_PWD={PASSWORD} {db_name} {DUMP}"

            def run_all(step: str, day: int, *, retention: bool = False) -> None:
                when = start + timedelta(days=day, minutes=1 if step == "second" else 0)
                # The page cache warm for each (GNU tar skips reading when writing to /dev/null).
                subprocess.run(f"tar -cf - -C {mountpoint} . | cat > /dev/null", shell=True,
                               check=True)  # fmt: skip
                progress(f"{step} (day {day + 1}): ours (run_backup) ...")
                with HelperPeak(client, project) as peak:
                    ours, ours_rss = run_ours(
                        {**ours_spec, "time": when.isoformat(), "retention": retention},
                        env,
                        scratch,
                    )
                rss["ours"] = max(rss["ours"], ours_rss)
                rss["helper"] = max(rss["helper"], peak.peak)
                detail[step] = ours
                results["ours"][step] = ours["seconds"]
                added = ", ".join(f"{k} +{v / MiB:.1f} MiB" for k, v in ours["added"].items())
                progress(
                    f"  ours {ours['seconds']:.1f} s ({added}; peak RSS: process "
                    f"{ours_rss / MiB:.0f} MiB (python {ours['self_rss'] / MiB:.0f}, its restic "
                    f"{ours['restic_rss'] / MiB:.0f}), helper {peak.peak / MiB:.0f} MiB)"
                )

                progress(f"{step} (day {day + 1}): restic direct ...")
                stamp = when.astimezone().strftime("%Y-%m-%d %H:%M:%S")
                common = f"--host {HOST} --time '{stamp}' --cache-dir {restic_cache}"
                site_s, site_rss = shell(
                    f"restic backup -q --tag site {common} {mountpoint}",
                    restic_env,
                    scratch,
                    "restic backup of the volume",
                )
                db_s, db_rss = 0.0, 0
                if with_db:
                    db_s, db_rss = shell(
                        f"{dump_cmd} | restic backup -q --tag db {common} --stdin "
                        "--stdin-filename db.sql",
                        restic_env,
                        scratch,
                        "mariadb-dump | restic backup --stdin",
                    )
                results["restic"][step] = site_s + db_s
                results["restic"][f"{step}_parts"] = (site_s, db_s)
                rss["restic"] = max(rss["restic"], site_rss, db_rss)
                progress(f"  restic {site_s + db_s:.1f} s (volume {site_s:.1f} s, db {db_s:.1f} s)")
                if retention:
                    forget_s, forget_rss = shell(
                        f"restic forget -q --cache-dir {restic_cache} --keep-daily 7 "
                        "--keep-weekly 4 --keep-monthly 12 --prune",
                        restic_env,
                        scratch,
                        "restic forget --prune",
                    )
                    results["restic"]["retention"] = forget_s
                    results["ours"]["retention"] = ours["retention_s"]
                    rss["restic"] = max(rss["restic"], forget_rss)
                    progress(
                        f"  retention: ours {ours['retention_s']:.1f} s "
                        f"({len(ours['pruned'])} backup(s) pruned), restic forget {forget_s:.1f} s"
                    )

                progress(f"{step} (day {day + 1}): tar | zstd | aws s3 cp ...")
                prefix = f"s3://{bucket}/tar/{step}"
                upload = f"| zstd -q -3 -T0 | {aws} s3 cp --only-show-errors -"
                site_t, site_trss = shell(
                    f"tar -cf - -C {mountpoint} . {upload} {prefix}/site.tar.zst",
                    env,
                    scratch,
                    "tar | zstd | aws s3 cp",
                )
                db_t, db_trss = 0.0, 0
                if with_db:
                    db_t, db_trss = shell(
                        f"{dump_cmd} {upload} {prefix}/db.sql.zst",
                        env,
                        scratch,
                        "mariadb-dump | zstd | aws s3 cp",
                    )
                results["tar"][step] = site_t + db_t
                rss["tar"] = max(rss["tar"], site_trss, db_trss)
                progress(f"  tar {site_t + db_t:.1f} s (volume {site_t:.1f} s, db {db_t:.1f} s)")

            run_all("first", 0)
            one_copy = {
                name: object_sizes(s3, bucket, f"{name}/") for name in ("ours", "restic", "tar")
            }
            run_all("second", 0)
            # The old format keeps one backup a day: the same-day second replaces the first.
            for obj in s3.list_objects_v2(Bucket=bucket, Prefix="tar/first/")["Contents"]:
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
            for day in range(1, DAYS):
                changed = change_site(mountpoint, rng, 0.01)
                if db is not None:
                    rows = change_database(db, rows, rng, 0.01)
                progress(
                    f"day {day + 1}: {changed / MiB:.1f} MiB of files rewritten, 1 % of orders"
                )
                run_all(f"day{day + 1}", day, retention=day == DAYS - 1)
            stored = {
                name: object_sizes(s3, bucket, f"{name}/") for name in ("ours", "restic", "tar")
            }
            load.append(os.getloadavg()[0])
        summary = report(args, files, size, dump_bytes, results, rss, stored, one_copy, detail)
        print(
            f"  a helper container that runs only restic version takes {helper_s:.2f} s; "
            f"load average {load[0]:.1f} at the first backup, {load[1]:.1f} after the last"
        )
        print(json.dumps({"helper_s": helper_s, "load": load, **summary}))
        progress("done; removing what the bench made")
        return 0
    finally:
        remove_bench(client, project)
        shutil.rmtree(scratch, ignore_errors=True)


def report(
    args: argparse.Namespace,
    files: int,
    size: int,
    dump_bytes: int,
    results: dict[str, dict[str, Any]],
    rss: dict[str, int],
    stored: dict[str, int],
    one_copy: dict[str, int],
    detail: dict[str, Any],
) -> dict[str, Any]:
    """Print the table and where ours spends its time; return the figures for the JSON line."""

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    def verdict(value: float, limit: float, text: str) -> str:
        return f"{text} {'met' if value <= limit else 'MISSED'}"

    o, r, t = results["ours"], results["restic"], results["tar"]
    days = [f"day{d + 1}" for d in range(1, DAYS)]
    mean = {name: sum(results[name][d] for d in days) / len(days) for name in results}
    ours_peak = max(rss["ours"], rss["helper"])
    mib = "{:.0f} MiB"
    rows = [
        ("", "ours (run_backup)", "restic direct", "tar|zstd|aws", "ours/restic", "target",
         "ours/tar"),
        ("first backup", f"{o['first']:.1f} s", f"{r['first']:.1f} s", f"{t['first']:.1f} s",
         ratio(o["first"], r["first"]), verdict(o["first"] / r["first"], 1.0, "<= 1.0x"),
         ratio(o["first"], t["first"])),
        ("second, unchanged", f"{o['second']:.1f} s", f"{r['second']:.1f} s",
         f"{t['second']:.1f} s", ratio(o["second"], r["second"]),
         verdict(o["second"] / r["second"], 1.2, "<= 1.2x"), ratio(o["second"], t["second"])),
        ("days 2..7, mean", f"{mean['ours']:.1f} s", f"{mean['restic']:.1f} s",
         f"{mean['tar']:.1f} s", ratio(mean["ours"], mean["restic"]), "",
         ratio(mean["ours"], mean["tar"])),
        ("retention, day 7", f"{o['retention']:.1f} s", f"{r['retention']:.1f} s", "-",
         ratio(o["retention"], r["retention"]), "", ""),
        ("one copy", mib.format(one_copy["ours"] / MiB), mib.format(one_copy["restic"] / MiB),
         mib.format(one_copy["tar"] / MiB), ratio(one_copy["ours"], one_copy["restic"]), "",
         ratio(one_copy["ours"], one_copy["tar"])),
        ("stored after 7 days", mib.format(stored["ours"] / MiB),
         mib.format(stored["restic"] / MiB), mib.format(stored["tar"] / MiB),
         ratio(stored["ours"], stored["restic"]), "", ratio(stored["ours"], stored["tar"])),
        ("stored / one copy", ratio(stored["ours"], one_copy["ours"]),
         ratio(stored["restic"], one_copy["restic"]), ratio(stored["tar"], one_copy["tar"]), "",
         verdict(stored["ours"] / one_copy["ours"], 1.3, "<= 1.3x"), ""),
        ("peak RSS, process", mib.format(rss["ours"] / MiB), mib.format(rss["restic"] / MiB),
         mib.format(rss["tar"] / MiB), ratio(rss["ours"], rss["restic"]), "", ""),
        ("peak RSS, helper", mib.format(rss["helper"] / MiB), "-", "-", "",
         verdict(ours_peak, RSS_TARGET, "<= 300 MB"), ""),
    ]  # fmt: skip
    data = f"{args.volume_mb} MB volume ({files} files, {size / MiB:.0f} MiB)"
    if dump_bytes:
        data += f" + MariaDB, a {dump_bytes / MiB:.0f} MiB dump"
    print(f"\nbackup of a {data}, moto's S3 over HTTP on loopback, {os.cpu_count()} CPUs")
    for row in rows:
        print(
            f"  {row[0]:<20} {row[1]:>17} {row[2]:>14} {row[3]:>13} {row[4]:>12}  {row[5]:<14}"
            f" {row[6]:>8}"
        )
    print("  (peak RSS, process: the largest process of each command and its children; ours's")
    print("   helper: restic in the helper container; its target is met when both are.)")
    print("\nwhere ours spends its time (each restic command run_backup ran, summed):")
    for step in ("first", "second", f"day{DAYS}"):
        ours = detail[step]
        by_command: dict[str, list[tuple[float, float]]] = {}
        for what, seconds, own in ours["commands"]:
            by_command.setdefault(what, []).append((seconds, own))
        restic_total = sum(seconds for _, seconds, _ in ours["commands"])
        parts = ", ".join(
            f"{what} {sum(s for s, _ in times):.1f} s"
            + (f" ({len(times)}x)" if len(times) > 1 else "")
            + (f" (restic's own {sum(o for _, o in times):.1f} s)" if times[0][1] else "")
            for what, times in by_command.items()
        )
        total = ours["seconds"] + ours["retention_s"]
        # The volume and the dump are written side by side: their commands overlap.
        line = f"  {step:<7} {total:6.1f} s: {parts}; restic commands summed {restic_total:.1f} s"
        print(line)
        site_s, db_s = results["restic"][f"{step}_parts"]
        print(f"  {'':<7} restic direct: volume {site_s:.1f} s, mariadb-dump | restic {db_s:.1f} s")
    return {
        "volume_mb": args.volume_mb,
        "db_mb": args.db_mb,
        "files": files,
        "dump_bytes": dump_bytes,
        "seconds": results,
        "rss": rss,
        "stored": stored,
        "one_copy": one_copy,
    }


if __name__ == "__main__":
    raise SystemExit(main())
