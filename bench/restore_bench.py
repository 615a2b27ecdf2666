"""Benchmark of restores (issue 4). Run by hand: ``/work/venv/bin/python bench/restore_bench.py``.

A 1 GB volume of mixed files (half random, half text) and a ~200 MB MariaDB
database are backed up to a local S3 server (moto) by the backup pipeline,
and uploaded the baseline way too. Then, interleaved, each ``--rounds`` times:

- **ours**: ``run_restore`` (resolve; verify: the volume staged by ``restic
  restore`` into a volume of its own and judged while the dump is fetched and
  screened; stop; the safety copy of what is there; the staged tree copied in
  while the dump loads; start) in a child process, whose peak RSS is reported;
- **restic**: restic alone on the same backup: ``restic restore`` of the
  volume's snapshot into a folder beside the volume's, moved into place,
  then ``restic dump`` of the dump's snapshot ``| mariadb`` (restic
  authenticates what it reads; no screening, no safety copy). Issue 10's
  target: ours <= 1.0x this;
- **baseline**: ``aws s3 cp s3://.../site.tar.gz - | tar -xzf - -C VOLUME_DIR``
  then ``aws s3 cp s3://.../db.sql - | mariadb`` (no verification, no safety
  copy, files not in the archive left in place).

Ours is reported whole and without its safety copy (the one step neither
baseline has a counterpart for). Every restore is checked: file checksums
and row counts equal to the originals. Everything it creates carries a
``rbench`` project label and is removed at the end.

Needs a Docker engine, the local busybox and mariadb images, moto_server, aws (awscli), root
(the baseline writes into the volume's folder under /var/lib/docker).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import docker
import requests

from reconciler import labels
from reconciler.adapters.restic import repository_url
from reconciler.backup.backing_up import run_backup
from reconciler.backup.backup_target import open_target
from reconciler.model.backup_policy import BackupPolicy, DatabaseBackup, VolumeBackup
from reconciler.model.desired import DesiredState, Mount, ServiceSpec, VolumeSpec
from reconciler.restore.restoring import RestoreContext, RestoreOptions, run_restore

BUSYBOX = "reconciler-local/busybox:latest"
MARIADB = "reconciler-local/mariadb:local"
PASSWORD = "bench-root"
KEY = "bench-key-" + "k" * 22  # RECONCILER_BACKUP_KEY of the bench's repository
RESTIC_IMAGE = "reconciler-local/restic:local"  # images/local/build-base-images.sh
MiB = 1024 * 1024
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fixtures, for clean-up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    log = (tmp / "moto.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            return process, url
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit("moto_server did not start")


def desired_state(project: str) -> DesiredState:
    return DesiredState(
        project=project,
        services={
            "web": ServiceSpec(
                name="web",
                image=BUSYBOX,
                command=("sleep", "1000000"),
                mounts=(Mount(type="volume", source=f"{project}_site", target="/data"),),
                stop_grace_period_s=1,
            ),
            "db": ServiceSpec(
                name="db",
                image=MARIADB,
                environment={"MARIADB_ROOT_PASSWORD": PASSWORD, "MARIADB_DATABASE": "shop"},
                mounts=(Mount(type="volume", source=f"{project}_dbdata", target="/var/lib/mysql"),),
            ),
        },
        networks={},
        volumes={
            "site": VolumeSpec(key="site", name=f"{project}_site"),
            "dbdata": VolumeSpec(key="dbdata", name=f"{project}_dbdata"),
        },
    )


def start_stack(client: docker.DockerClient, desired: DesiredState) -> None:
    project = desired.project
    for volume in desired.volumes.values():
        client.volumes.create(volume.name, labels={labels.PROJECT: project})
    for service in desired.services.values():
        client.containers.run(
            service.image,
            command=list(service.command) if service.command else None,
            name=labels.container_name(project, service.name),
            detach=True,
            environment=service.environment,
            labels={labels.PROJECT: project, labels.SERVICE: service.name},
            volumes={m.source: {"bind": m.target, "mode": "rw"} for m in service.mounts},
        )


def mountpoint(client: docker.DockerClient, volume: str) -> Path:
    return Path(client.volumes.get(volume).attrs["Mountpoint"])


def make_files(folder: Path, total: int) -> None:
    """Half random bytes (photos, archives), half text (html, css, php) in nested folders."""
    rng = random.Random(4)
    words = [secrets.token_hex(rng.randint(2, 6)) for _ in range(2000)]
    written = 0
    index = 0
    while written < total:
        sub = folder / f"d{index % 40:02d}" / f"s{index % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        if index % 2:
            size = rng.choice([64 * 1024, 512 * 1024, 2 * MiB, 5 * MiB])
            (sub / f"f{index}.bin").write_bytes(os.urandom(size))
        else:
            lines = []
            size = 0
            target = rng.choice([8 * 1024, 64 * 1024, 1 * MiB])
            while size < target:
                line = " ".join(rng.choices(words, k=12)) + f" {index} {size}\n"
                lines.append(line)
                size += len(line)
            (sub / f"f{index}.html").write_text("".join(lines))
        written += size
        index += 1


def fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                while block := handle.read(4 * MiB):
                    digest.update(block)
    return digest.hexdigest()


def sql(client: docker.DockerClient, container: str, statement: str) -> str:
    result = client.containers.get(container).exec_run(
        ["mariadb", "-uroot", "--batch", "--skip-column-names", "-e", statement],
        environment={"MYSQL_PWD": PASSWORD},
    )
    if result.exit_code != 0:
        raise SystemExit(f"SQL failed: {result.output.decode()}")
    return str(result.output.decode()).strip()


def wait_db(client: docker.DockerClient, container: str) -> None:
    for _ in range(240):
        if client.containers.get(container).exec_run(["healthcheck.sh"]).exit_code == 0:
            return
        time.sleep(0.5)
    raise SystemExit("database did not start")


def make_database(client: docker.DockerClient, container: str, rows: int) -> None:
    sql(
        client,
        container,
        "USE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, "
        "sku CHAR(32), note VARCHAR(255), body TEXT) ENGINE=InnoDB;"
        f"INSERT INTO shop.orders (sku, note, body) SELECT md5(seq), "
        "concat('order ', seq, ' ', md5(rand())), repeat(md5(rand()), 4) "
        f"FROM seq_1_to_{rows};",
    )


def run(command: str) -> float:
    started = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    return time.monotonic() - started


def timed_rss(command: str) -> tuple[float, int]:
    """Wall seconds and the peak RSS (KiB) of the largest process of a shell pipeline."""
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return time.monotonic() - started, max(after, before)


def ours_child(
    queue: Any, desired: DesiredState, state_dir: str, target: str, request: str, safety: str
) -> None:
    client = docker.from_env()
    context = RestoreContext(
        client=client,
        desired=desired,
        state_dir=Path(state_dir),
        default_source=target,
        safety_target=safety or target,
        environ={
            **os.environ,
            "RECONCILER_BACKUP_KEY": KEY,
            "RECONCILER_HELPER_IMAGE": RESTIC_IMAGE,
        },
    )
    report = run_restore(request, RestoreOptions(), context)
    queue.put(
        {
            "duration": report.duration_s,
            "timings": report.timings,
            "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=1_000_000, help="~200 B of dump per row")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--safety-local",
        action="store_true",
        help="safety copies to a local folder (RECONCILER_SAFETY_COPY_DIR) instead of S3",
    )
    parser.add_argument(
        "--baseline-ranged-gets",
        dest="baseline_single_get",
        action="store_false",
        help="let awscli download in 8 MiB ranges (its default; slow against moto)",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="restore-bench-"))
    moto, url = start_moto(tmp)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    bucket = f"rbench-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
    client = docker.from_env()
    project = f"rbench{secrets.token_hex(3)}"
    desired = desired_state(project)
    db = labels.container_name(project, "db")
    # The baseline's awscli downloads with one GET per object, as ours does: its
    # default ranged GETs (8 MiB parts) are far slower against moto, which copies
    # the whole object for each range; that would flatter ours.
    aws_config = tmp / "aws-config"
    aws_config.write_text(
        "[default]\ns3 =\n  multipart_threshold = 64GB\n  multipart_chunksize = 64MB\n"
    )
    aws = f"aws --endpoint-url {url} s3 cp --only-show-errors"  # uploads: the defaults
    aws_get = (
        f"AWS_CONFIG_FILE={aws_config if args.baseline_single_get else os.devnull} "
        f"aws --endpoint-url {url} s3 cp --only-show-errors"
    )
    try:
        start_stack(client, desired)
        site = mountpoint(client, f"{project}_site")
        print(f"generating {args.size_mb} MB of files and {args.rows} rows ...", flush=True)
        make_files(site, args.size_mb * MiB)
        wait_db(client, db)
        make_database(client, db, args.rows)
        files = fingerprint(site)
        rows = sql(client, db, "SELECT COUNT(*), SUM(CRC32(body)) FROM shop.orders")
        raw_dump = int(
            subprocess.run(
                [
                    "bash",
                    "-c",
                    f"docker exec -e MYSQL_PWD={PASSWORD} {db} mariadb-dump -uroot "
                    "--single-transaction shop | wc -c",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        print(f"volume: {args.size_mb} MB; dump of shop: {raw_dump / MiB:.0f} MiB", flush=True)

        target = f"s3://{bucket}/prod"
        policy = BackupPolicy(
            target=target,
            volumes=(VolumeBackup(name="site"),),
            databases=(DatabaseBackup(service="db"),),
        )
        started = time.monotonic()
        result = run_backup(
            client=client,
            target=open_target(
                target, {**os.environ, "RECONCILER_BACKUP_KEY": KEY}, state_dir=tmp / "backup-state"
            ),
            desired=desired,
            policy=policy,
            state_dir=tmp / "backup-state",
            helper_image=RESTIC_IMAGE,
            prune_after=False,
        )
        print(
            f"backup (ours): {time.monotonic() - started:.1f}s, "
            f"{result.manifest.size / MiB:.0f} MiB stored",
            flush=True,
        )
        started = time.monotonic()
        run(
            f"tar -czf - -C {site} . | {aws} - s3://{bucket}/baseline/site.tar.gz --expected-size "
            f"{args.size_mb * MiB * 2}"
        )
        run(
            f"docker exec -e MYSQL_PWD={PASSWORD} {db} mariadb-dump -uroot --single-transaction "
            f"--all-databases --routines --events --triggers | {aws} - s3://{bucket}/baseline/db.sql"
        )
        print(f"backup (baseline upload): {time.monotonic() - started:.1f}s", flush=True)

        # RECONCILER_SAFETY_COPY_DIR's effect: safety copies to a local folder.
        safety = f"file://{tmp / 'safety'}" if args.safety_local else ""
        ours: list[dict[str, Any]] = []
        baseline: list[tuple[float, int]] = []
        alone: list[tuple[float, int]] = []
        snapshots = {a.kind: a.snapshot for a in result.manifest.artifacts}
        restic_env = (
            f"RESTIC_PASSWORD={KEY} RESTIC_REPOSITORY={repository_url(target)} "
            f"RESTIC_CACHE_DIR={tmp / 'restic-cache'}"
        )
        beside = site.parent / "restic-restore"  # the same file system as the volume
        context = multiprocessing.get_context("spawn")
        for round_ in range(args.rounds):
            # Damage between runs, so each restore has something to replace.
            shutil.rmtree(site / "d00", ignore_errors=True)
            sql(client, db, "DELETE FROM shop.orders WHERE id % 3 = 0")
            queue = context.Queue()
            child = context.Process(
                target=ours_child,
                args=(queue, desired, str(tmp / "state"), target, f"bench-{round_}", safety),
            )
            started = time.monotonic()
            child.start()
            outcome = queue.get(timeout=3600)
            child.join()
            outcome["wall"] = time.monotonic() - started
            ours.append(outcome)
            assert fingerprint(site) == files, "ours: files differ"
            assert sql(client, db, "SELECT COUNT(*), SUM(CRC32(body)) FROM shop.orders") == rows
            print(
                f"round {round_ + 1} ours: {outcome['wall']:.1f}s {outcome['timings']} "
                f"rss {outcome['rss_kib'] / 1024:.0f} MiB",
                flush=True,
            )

            shutil.rmtree(site / "d00", ignore_errors=True)
            sql(client, db, "DELETE FROM shop.orders WHERE id % 3 = 0")
            seconds, rss = timed_rss(
                f"{aws_get} s3://{bucket}/baseline/site.tar.gz - | tar -xzf - -C {site} && "
                f"{aws_get} s3://{bucket}/baseline/db.sql - | "
                f"docker exec -i -e MYSQL_PWD={PASSWORD} {db} mariadb -uroot"
            )
            baseline.append((seconds, rss))
            assert fingerprint(site) == files, "baseline: files differ"
            assert sql(client, db, "SELECT COUNT(*), SUM(CRC32(body)) FROM shop.orders") == rows
            print(f"round {round_ + 1} baseline: {seconds:.1f}s", flush=True)

            shutil.rmtree(site / "d00", ignore_errors=True)
            sql(client, db, "DELETE FROM shop.orders WHERE id % 3 = 0")
            seconds, rss = timed_rss(
                f"rm -rf {beside} && {restic_env} restic restore -q {snapshots['volume']} "
                f"--target {beside} && find {site} -mindepth 1 -delete && "
                f"mv {beside}/volume/site/* {site}/ && rm -rf {beside} && "
                f"{restic_env} restic dump -q {snapshots['database']} /db.sql | "
                f"docker exec -i -e MYSQL_PWD={PASSWORD} {db} mariadb -uroot"
            )
            alone.append((seconds, rss))
            assert fingerprint(site) == files, "restic: files differ"
            assert sql(client, db, "SELECT COUNT(*), SUM(CRC32(body)) FROM shop.orders") == rows
            print(f"round {round_ + 1} restic alone: {seconds:.1f}s", flush=True)

        whole = statistics.median(o["wall"] for o in ours)
        without_safety = statistics.median(o["wall"] - o["timings"]["safety_copy"] for o in ours)
        verify = statistics.median(o["timings"]["verify"] for o in ours)
        replace = statistics.median(o["timings"]["replace"] for o in ours)
        base = statistics.median(b[0] for b in baseline)
        restic_alone = statistics.median(a[0] for a in alone)
        print()
        print(
            f"restore of {args.size_mb} MB volume + {raw_dump / MiB:.0f} MiB dump "
            f"(median of {args.rounds}):"
        )
        print(f"  baseline aws s3 cp | tar -xz ; aws s3 cp | mariadb : {base:7.1f}s")
        print(f"  restic restore ; restic dump | mariadb            : {restic_alone:7.1f}s")
        print(f"  (our safety copies go to {'a local folder' if args.safety_local else 'S3'})")
        print(
            f"  ours, whole (verify + safety copy + replace)     : {whole:7.1f}s "
            f"({whole / restic_alone:.2f}x restic's time; {base / whole:.2f}x the baseline's speed)"
        )
        print(
            f"  ours, without the safety copy                    : {without_safety:7.1f}s "
            f"({without_safety / restic_alone:.2f}x restic's time)"
        )
        print(f"    of which verify (stage, fetch, screen): {verify:.1f}s, replace: {replace:.1f}s")
        print(f"  ours, peak RSS: {max(o['rss_kib'] for o in ours) / 1024:.0f} MiB")
        return 0
    finally:
        try:
            from tests.fixtures.docker_engine import remove_project

            remove_project(client, project)
        finally:
            moto.terminate()
            moto.wait(timeout=30)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
