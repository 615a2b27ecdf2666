"""Benchmark: our backup against ``tar -czf - DIR | aws s3 cp -`` on the same data, same run.

Builds a volume of mixed files (text pages and styles, compressible logs,
incompressible media, many small files) and a MariaDB database, starts a local
S3 server (moto), then times, in one run:

- ours: ``run_backup`` (volume through the archive API, dump through docker
  exec, zstd, SHA-256, multipart upload), in a child process so its peak RSS
  is its own;
- the baseline: ``tar -czf - VOLUME_DIR | aws s3 cp - s3://...`` plus
  ``docker exec mariadb-dump | gzip | aws s3 cp - s3://...``.

Prints wall times, the ratio and peak RSS as a table. Run by hand as root on
a machine with Docker (not in CI):

    python bench/backup_bench.py --volume-gb 1 --db-mb 200
    python bench/backup_bench.py --volume-gb 4 --db-mb 0     # RSS at 4 GB

Everything it creates carries the label ``dev.reconciler.project=<bench id>``
and is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler import labels  # noqa: E402

BUSYBOX = "reconciler-local/busybox:latest"
MARIADB = "reconciler-local/mariadb:local"
PASSWORD = "bench-root"
KEY = "bench-key-" + "k" * 22  # the restic repository's password (RECONCILER_BACKUP_KEY)
RESTIC_IMAGE = "reconciler-local/restic:local"  # images/local/build-base-images.sh
MiB = 1024 * 1024

WORDS = (  # noqa: SIM905 - a sentence reads better than 80 quoted words
    "the of and to in is for on that with as was by at from this be are or an it not "
    "order customer product price shipping cart checkout invoice payment total tax "
    "function return echo array string null true false class public private static "
    "div span href src style color margin padding border width height font display "
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud"
).split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def text_block(rng: random.Random, size: int) -> bytes:
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(6, 18))) + f" {rng.randint(0, 99999)}\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


def populate(folder: Path, total: int, seed: int = 1) -> tuple[int, int]:
    """Write about ``total`` bytes of mixed files under ``folder``; return (files, bytes)."""
    rng = random.Random(seed)
    written = 0
    files = 0
    # A pool of text to cut pages from: building fresh random text for every
    # byte would make the benchmark mostly a text generator.
    pool = text_block(rng, 8 * MiB)
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


def wait_healthy(container: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if container.exec_run(["healthcheck.sh"]).exit_code == 0:
            return
        time.sleep(0.5)
    raise SystemExit(f"{container.name} did not become healthy")


def fill_database(container: Any, megabytes: int) -> int:
    """Grow a table until its dump is about ``megabytes``; return the row count."""
    rows = max(1, megabytes * MiB // 330)
    sql = (
        "CREATE DATABASE IF NOT EXISTS shop; USE shop;"
        "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer VARCHAR(64),"
        " total DECIMAL(10,2), note TEXT, created DATETIME);"
        "INSERT INTO orders (customer, total, note, created) VALUES ('seed', 1, 'seed', NOW());"
    )
    run_sql(container, sql)
    count = 1
    while count < rows:
        batch = min(count, rows - count)
        run_sql(
            container,
            "INSERT INTO shop.orders (customer, total, note, created) "
            "SELECT CONCAT('customer-', FLOOR(RAND()*100000)), RAND()*500, "
            "CONCAT_WS(' ', MD5(RAND()), MD5(RAND()), 'order for', MD5(RAND()), MD5(RAND()),"
            " MD5(RAND()), 'shipped', MD5(RAND()), MD5(RAND())),"
            " NOW() - INTERVAL FLOOR(RAND()*900) DAY "
            f"FROM shop.orders LIMIT {batch};",
        )
        count += batch
    return count


def run_sql(container: Any, sql: str) -> None:
    result = container.exec_run(
        ["mariadb", "--user=root", "-e", sql], environment={"MYSQL_PWD": PASSWORD}
    )
    if result.exit_code != 0:
        raise SystemExit(result.output.decode())


def timed_child(command: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Run ``command``; return (wall seconds, peak RSS in KiB of it and its children, status)."""
    started = time.monotonic()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, int(usage.ru_maxrss), process.returncode


def ours_child(args: argparse.Namespace) -> int:
    """The measured process: one backup with the real pipeline."""
    from reconciler.backup.backing_up import run_backup
    from reconciler.backup.backup_target import open_target
    from reconciler.model.backup_policy import BackupPolicy, DatabaseBackup, VolumeBackup
    from reconciler.model.desired import DesiredState, Mount, ServiceSpec, VolumeSpec

    project = args.project
    services = {
        "web": ServiceSpec(
            name="web",
            image=BUSYBOX,
            mounts=(Mount(type="volume", source=f"{project}_site", target="/data"),),
        )
    }
    if args.db_mb:
        services["db"] = ServiceSpec(
            name="db", image=MARIADB, environment={"MARIADB_ROOT_PASSWORD": PASSWORD}
        )
    desired = DesiredState(
        project=project,
        services=services,
        networks={},
        volumes={"site": VolumeSpec(key="site", name=f"{project}_site")},
    )
    policy = BackupPolicy(
        target=f"s3://{args.bucket}/ours",
        volumes=(VolumeBackup(name="site"),),
        databases=(DatabaseBackup(service="db"),) if args.db_mb else (),
    )
    client = docker.from_env(timeout=600)
    result = run_backup(
        client=client,
        target=open_target(
            f"s3://{args.bucket}/ours",
            {**os.environ, "RECONCILER_BACKUP_KEY": os.environ.get("RECONCILER_BACKUP_KEY", KEY)},
            state_dir=Path(args.state_dir),
        ),
        desired=desired,
        policy=policy,
        state_dir=Path(args.state_dir),
        helper_image=RESTIC_IMAGE,
        prune_after=False,
    )
    print(json.dumps({"size": result.manifest.size, "artifacts": len(result.manifest.artifacts)}))
    return 0


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    log_fd, log_path = tempfile.mkstemp(prefix="moto-bench-", suffix=".log")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log_fd, stderr=log_fd
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
        process.wait(timeout=30)
        os.unlink(log_path)


def object_sizes(client: Any, bucket: str, prefix: str) -> int:
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += sum(int(o["Size"]) for o in page.get("Contents", []))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volume-gb", type=float, default=1.0)
    parser.add_argument("--db-mb", type=int, default=200)
    parser.add_argument("--keep-data", action="store_true", help=argparse.SUPPRESS)
    # Internal: the measured child process.
    parser.add_argument("--ours", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours:
        return ours_child(args)

    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    if aws is None:
        raise SystemExit("awscli is missing: pip install awscli (it is in the test extras)")
    client = docker.from_env(timeout=600)
    project = "bench" + uuid.uuid4().hex[:6]
    volume_name = f"{project}_site"
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    state_dir = tempfile.mkdtemp(prefix="bench-state-")
    made: list[Any] = []
    try:
        volume = client.volumes.create(volume_name, labels={labels.PROJECT: project})
        made.append(volume)
        mountpoint = Path(volume.attrs["Mountpoint"])
        t0 = time.monotonic()
        files, size = populate(mountpoint, int(args.volume_gb * 1024 * MiB))
        print(f"volume: {files} files, {size / MiB:.0f} MiB ({time.monotonic() - t0:.0f}s to make)")
        web = client.containers.create(
            BUSYBOX,
            ["sleep", "3600"],
            name=labels.container_name(project, "web"),
            labels={labels.PROJECT: project},
            volumes={volume_name: {"bind": "/data", "mode": "rw"}},
        )
        made.append(web)
        db = None
        if args.db_mb:
            db = client.containers.run(
                MARIADB,
                name=labels.container_name(project, "db"),
                detach=True,
                environment={"MARIADB_ROOT_PASSWORD": PASSWORD},
                labels={labels.PROJECT: project},
            )
            made.append(db)
            wait_healthy(db)
            t0 = time.monotonic()
            rows = fill_database(db, args.db_mb)
            print(f"database: {rows} rows ({time.monotonic() - t0:.0f}s to make)")

        with moto_server() as endpoint:
            env = dict(os.environ)
            env.update(
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_ENDPOINT_URL_S3=endpoint,
                AWS_ENDPOINT_URL=endpoint,
            )
            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
                region_name="us-east-1",
            )
            s3.create_bucket(Bucket=bucket)

            baseline_parts = [
                f"tar -czf - -C {mountpoint} . | {aws} s3 cp - s3://{bucket}/baseline/site.tar.gz"
            ]
            if db is not None:
                baseline_parts.append(
                    f"docker exec -e MYSQL_PWD={PASSWORD} {db.name} mariadb-dump --user=root "
                    "--single-transaction --all-databases --routines --events --triggers "
                    f"| gzip -c | {aws} s3 cp - s3://{bucket}/baseline/db.sql.gz"
                )
            baseline_cmd = ["sh", "-c", "set -e; " + "; ".join(baseline_parts)]
            ours_cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--ours",
                f"--project={project}",
                f"--bucket={bucket}",
                f"--state-dir={state_dir}",
                f"--db-mb={args.db_mb}",
            ]
            # Drop caches would need privileges we may not have; instead warm
            # the page cache once so neither run pays the cold read alone.
            subprocess.run(["tar", "-cf", "/dev/null", "-C", str(mountpoint), "."], check=True)
            ours_s, ours_rss, ours_rc = timed_child(ours_cmd, env)
            base_s, base_rss, base_rc = timed_child(baseline_cmd, env)
            if ours_rc or base_rc:
                raise SystemExit(f"a run failed: ours exit {ours_rc}, baseline exit {base_rc}")
            ours_bytes = object_sizes(s3, bucket, "ours/")
            base_bytes = object_sizes(s3, bucket, "baseline/")

        rows_out = [
            ("", "ours (zstd, streaming)", "tar -czf | aws s3 cp"),
            ("wall time", f"{ours_s:.1f} s", f"{base_s:.1f} s"),
            ("stored", f"{ours_bytes / MiB:.0f} MiB", f"{base_bytes / MiB:.0f} MiB"),
            (
                "peak RSS",
                f"{ours_rss / 1024:.0f} MiB",
                f"{base_rss / 1024:.0f} MiB (largest process)",
            ),
        ]
        data_desc = f"{args.volume_gb:g} GB volume" + (
            f" + {args.db_mb} MB database" if args.db_mb else ""
        )
        print(f"\nbackup of a {data_desc} to a local S3 server (moto)")
        for label, a, b in rows_out:
            print(f"  {label:<10} {a:>24}   {b}")
        print(f"  speed-up   {base_s / ours_s:>22.2f}x")
        print(
            json.dumps(
                {
                    "volume_gb": args.volume_gb,
                    "db_mb": args.db_mb,
                    "ours_s": round(ours_s, 2),
                    "baseline_s": round(base_s, 2),
                    "speedup": round(base_s / ours_s, 2),
                    "ours_peak_rss_mib": round(ours_rss / 1024),
                    "baseline_peak_rss_mib": round(base_rss / 1024),
                    "ours_stored_mib": round(ours_bytes / MiB),
                    "baseline_stored_mib": round(base_bytes / MiB),
                }
            )
        )
        return 0
    finally:
        # Containers first (they hold the volume), then the volume.
        for thing in reversed(made):
            with contextlib.suppress(docker.errors.DockerException):
                thing.remove(force=True)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
