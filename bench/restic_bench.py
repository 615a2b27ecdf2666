"""Benchmark: the restic adapter against restic run directly and ``tar | zstd | aws s3 cp -``.

One run, the same data, one local S3 server (moto) for all three:

- ours: ``reconciler.adapters.restic`` in a child process; the volume read by
  restic in a helper container (the volume read-only, restic's cache in a
  named volume kept between backups, ``network_mode: host`` to reach moto on
  loopback), the dump streamed into a local ``restic backup --stdin``;
- restic: ``restic backup DIR`` and ``restic backup --stdin`` run by a shell
  on the host, its cache in a folder kept between backups;
- tar: ``tar -cf - DIR | zstd -3 -T0 | aws s3 cp -`` and ``zstd < dump | aws s3 cp -``,
  a full copy every day (what today's format stores).

Measured: the first backup, a second backup of unchanged data, then one
backup a day for days 2..7 of data that changes 1 % a day (files rewritten,
1 % of the dump's rows: half appended, half updates of the newest 5 %, as a
shop's orders change; restic's backups are dated with ``--time``),
retention ``forget --keep-daily 7 ... --prune`` at the end; stored bytes
after that against one copy; peak RSS. Run by hand as root on a machine with
Docker (it writes the volume through its mountpoint):

    python bench/restic_bench.py --site-mb 150 --dump-mb 20

The helper's image is the local Debian base plus the host's restic binary
(the reconciler's image carries Debian's same restic 0.14; building it would
only add minutes). Peak RSS of ours is that of our process and its children
(GNU time's ``%M``, as for the other two), and of restic in the helper (the
highest ``total_rss`` of its memory cgroup, polled every 0.1 s: cgroup v1
keeps no peak of RSS alone).
Everything it makes carries the label ``dev.reconciler.project=<bench id>``
and is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from backup_bench import moto_server, object_sizes, populate, text_block  # noqa: E402

from reconciler import labels  # noqa: E402

DEBIAN = "reconciler-local/debian:bookworm"
KEY = "bench-key-" + "k" * 22
HOST = "bench"
MiB = 1024 * 1024
DAYS = 7


# --- ours, in a child process ---------------------------------------------------------------


def ours_child(spec: dict[str, Any]) -> int:
    from reconciler.adapters.restic import Repository, Retention
    from reconciler.adapters.restic_helper import HelperRunner, volume_path

    client = docker.from_env(timeout=600)
    runner = HelperRunner(
        client,
        image=spec["image"],
        project=spec["project"],
        volumes=[spec["volume"]],
        cache_volume=spec["cache_volume"],
        network_mode="host",
    )
    helper_repo = Repository(spec["target"], key=KEY, runner=runner)
    local_repo = Repository(spec["target"], key=KEY, cache_dir=spec["cache_dir"])
    if spec.get("init"):
        # Made untimed, like the direct repository's ``restic init``.
        print(json.dumps({"made": local_repo.ensure()}))
        return 0
    when = datetime.fromisoformat(spec["time"])
    started = time.monotonic()
    site = helper_repo.backup_folder(
        volume_path(spec["volume"]), tags=["site"], host=HOST, time=when
    )
    site_s = time.monotonic() - started
    with open(spec["dump"], "rb") as dump:
        db = local_repo.backup_stdin(dump, filename="db.sql", tags=["db"], host=HOST, time=when)
    if spec.get("forget"):
        local_repo.forget(Retention(daily=7, weekly=4, monthly=12))
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "site_s": site_s,
                "site_added": site.data_added,
                "db_added": db.data_added,
            }
        )
    )
    return 0


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
        selector = {"label": [f"{labels.PROJECT}={self.project}", labels.HELPER]}
        while not self._stop.wait(0.1):
            with contextlib.suppress(docker.errors.DockerException, OSError):
                for raw in self.client.api.containers(filters=selector):
                    for stat in (
                        Path(f"/sys/fs/cgroup/memory/docker/{raw['Id']}/memory.stat"),
                        Path(f"/sys/fs/cgroup/system.slice/docker-{raw['Id']}.scope/memory.stat"),
                    ):
                        if stat.exists():
                            values = dict(line.split() for line in stat.read_text().splitlines())
                            rss = int(values.get("total_rss", values.get("anon", 0)))
                            self.peak = max(self.peak, rss)


# --- data that changes 1 % a day -------------------------------------------------------------


def change_site(folder: Path, rng: random.Random, fraction: float) -> int:
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


def make_dump(rng: random.Random, megabytes: int) -> list[bytes]:
    lines = [b"CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(64), note TEXT);\n"]
    size = 0
    i = 0
    while size < megabytes * MiB:
        line = order_line(rng, i)
        lines.append(line)
        size += len(line)
        i += 1
    return lines


def order_line(rng: random.Random, i: int) -> bytes:
    note = " ".join(f"{rng.getrandbits(128):032x}" for _ in range(3))
    return (
        f"INSERT INTO orders VALUES ({i},'customer-{rng.randint(0, 99999)}','{note}');\n".encode()
    )


def change_dump(lines: list[bytes], rng: random.Random, fraction: float) -> None:
    """A shop's day: half of the change new orders, half updates of the newest 5 %."""
    count = int(len(lines) * fraction)
    recent = range(max(1, len(lines) - len(lines) // 20), len(lines))
    for index in rng.sample(recent, min(len(recent), count // 2)):
        lines[index] = order_line(rng, index)
    lines.extend(order_line(rng, len(lines) + i) for i in range(count - count // 2))


# --- the run --------------------------------------------------------------------------------


def build_image(client: docker.DockerClient, project: str) -> str:
    client.images.get(DEBIAN)
    context = Path(tempfile.mkdtemp(prefix="restic-bench-image-"))
    try:
        shutil.copy(shutil.which("restic") or "/usr/bin/restic", context / "restic")
        (context / "Dockerfile").write_text(f"FROM {DEBIAN}\nCOPY restic /usr/bin/restic\n")
        tag = f"{project}-restic:bench"
        subprocess.run(
            [
                "docker",
                "build",
                "-q",
                "--label",
                f"{labels.PROJECT}={project}",
                "-t",
                tag,
                str(context),
            ],
            check=True,
            capture_output=True,
        )
        return tag
    finally:
        shutil.rmtree(context, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site-mb", type=int, default=150)
    parser.add_argument("--dump-mb", type=int, default=20)
    parser.add_argument("--ours-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_child:
        return ours_child(json.loads(args.ours_child))

    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    if aws is None or shutil.which("zstd") is None or shutil.which("restic") is None:
        raise SystemExit("needs aws (awscli), zstd and restic on PATH")
    client = docker.from_env(timeout=600)
    project = "bench" + uuid.uuid4().hex[:6]
    volume_name = f"{project}_site"
    cache_volume = f"{project}-restic-cache"
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    scratch = Path(tempfile.mkdtemp(prefix="restic-bench-"))
    rng = random.Random(7)
    image = ""
    try:
        image = build_image(client, project)
        volume = client.volumes.create(volume_name, labels={labels.PROJECT: project})
        mountpoint = Path(volume.attrs["Mountpoint"])
        files, size = populate(mountpoint, args.site_mb * MiB)
        dump_lines = make_dump(rng, args.dump_mb)
        dump = scratch / "db.sql"
        print(f"site: {files} files, {size / MiB:.0f} MiB; dump {args.dump_mb} MiB")

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
            restic_env = dict(
                env,
                RESTIC_PASSWORD=KEY,
                RESTIC_REPOSITORY=f"s3:{endpoint}/{bucket}/restic",
            )
            subprocess.run(["restic", "init", "--repository-version", "2"], env=restic_env,
                           check=True, capture_output=True)  # fmt: skip
            restic_cache = scratch / "restic-cache"
            start = datetime.now(UTC) - timedelta(days=DAYS)
            results: dict[str, dict[str, Any]] = {"ours": {}, "restic": {}, "tar": {}}

            def run_all(step: str, day: int, *, forget: bool = False) -> None:
                when = start + timedelta(days=day, minutes=1 if step == "second" else 0)
                dump.write_bytes(b"".join(dump_lines))
                subprocess.run(["tar", "-cf", "/dev/null", "-C", str(mountpoint), "."], check=True)
                spec = {
                    "target": f"s3://{bucket}/ours",
                    "image": image,
                    "project": project,
                    "volume": volume_name,
                    "cache_volume": cache_volume,
                    "cache_dir": str(scratch / "ours-cache"),
                    "dump": str(dump),
                    "time": when.isoformat(),
                    "forget": forget,
                }
                command = [sys.executable, __file__, "--ours-child", json.dumps(spec)]
                with HelperPeak(client, project) as peak:
                    ours, ours_rss = run_ours(command, env, scratch)
                stamp = when.strftime("%Y-%m-%d %H:%M:%S")
                restic_cmd = (
                    f"restic backup -q --host {HOST} --tag site --time '{stamp}' "
                    f"--cache-dir {restic_cache} {mountpoint} && restic backup -q --host {HOST} "
                    f"--tag db --time '{stamp}' --cache-dir {restic_cache} --stdin "
                    f"--stdin-filename db.sql < {dump}"
                )
                if forget:
                    restic_cmd += (
                        f" && restic forget -q --cache-dir {restic_cache} --keep-last 3 "
                        "--keep-within 1d --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune"
                    )
                r_s, r_rss, r_rc, _ = timed_child(["sh", "-c", restic_cmd], restic_env, scratch)
                prefix = f"tar/{step}-{day}"
                tar_cmd = (
                    f"set -e; tar -cf - -C {mountpoint} . | zstd -q -3 -T0 | "
                    f"{aws} s3 cp - s3://{bucket}/{prefix}/site.tar.zst; "
                    f"zstd -q -3 -T0 < {dump} | {aws} s3 cp - s3://{bucket}/{prefix}/db.sql.zst"
                )
                t_s, t_rss, t_rc, _ = timed_child(["sh", "-c", tar_cmd], env, scratch)
                if r_rc or t_rc:
                    raise SystemExit(f"a run failed: restic {r_rc}, tar {t_rc}")
                results["ours"][step] = ours["seconds"]
                results["restic"][step] = r_s
                results["tar"][step] = t_s
                for name, rss in (("ours", ours_rss), ("restic", r_rss), ("tar", t_rss)):
                    results[name]["rss"] = max(results[name].get("rss", 0), rss * 1024)
                results["ours"]["helper_rss"] = max(results["ours"].get("helper_rss", 0), peak.peak)
                print(
                    f"{step} day {day}: ours {ours['seconds']:.1f}s (site {ours['site_s']:.1f}s) "
                    f"(+{ours['site_added'] / MiB:.1f} MiB site, "
                    f"+{ours['db_added'] / MiB:.1f} MiB db), restic {r_s:.1f}s, "
                    f"tar {t_s:.1f}s",
                    flush=True,
                )

            init = {
                "target": f"s3://{bucket}/ours",
                "image": image,
                "project": project,
                "volume": volume_name,
                "cache_volume": cache_volume,
                "cache_dir": str(scratch / "ours-cache"),
                "init": True,
            }
            run_ours([sys.executable, __file__, "--ours-child", json.dumps(init)], env, scratch)
            run_all("first", 0)
            one_copy = {
                "ours": object_sizes(s3, bucket, "ours/"),
                "restic": object_sizes(s3, bucket, "restic/"),
                "tar": object_sizes(s3, bucket, "tar/"),
            }
            run_all("second", 0)
            # The old format keeps one backup a day: the same-day second replaces the first.
            for obj in s3.list_objects_v2(Bucket=bucket, Prefix="tar/first-0/")["Contents"]:
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
            for day in range(1, DAYS):
                change_site(mountpoint, rng, 0.01)
                change_dump(dump_lines, rng, 0.01)
                run_all(f"day{day + 1}", day, forget=day == DAYS - 1)
            stored = {
                "ours": object_sizes(s3, bucket, "ours/"),
                "restic": object_sizes(s3, bucket, "restic/"),
                "tar": object_sizes(s3, bucket, "tar/"),
            }
        report(results, stored, one_copy, size + args.dump_mb * MiB)
        return 0
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            for raw in client.api.containers(
                all=True, filters={"label": f"{labels.PROJECT}={project}"}
            ):
                client.api.remove_container(raw["Id"], force=True)
        for name in (volume_name, cache_volume):
            with contextlib.suppress(docker.errors.DockerException):
                client.volumes.get(name).remove(force=True)
        if image:
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(image, force=True)
        shutil.rmtree(scratch, ignore_errors=True)


def timed_child(
    command: list[str], env: dict[str, str], scratch: Path
) -> tuple[float, int, int, str]:
    """(wall seconds, peak RSS in KiB of it and its children, exit status, stdout).

    Under GNU time: a child forked from this process would start its RSS high
    mark at this process's (Linux carries it over exec), which holds the dump.
    """
    out_path, rss_path = scratch / "child.out", scratch / "child.rss"
    started = time.monotonic()
    with out_path.open("wb") as out:
        status = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(rss_path), *command],
            env=env,
            stdout=out,
            check=False,
        ).returncode
    seconds = time.monotonic() - started
    rss = int(rss_path.read_text().strip().splitlines()[-1])
    return seconds, rss, status, out_path.read_text()


def run_ours(command: list[str], env: dict[str, str], scratch: Path) -> tuple[dict[str, Any], int]:
    """Run the ours child; its last stdout line and the peak RSS (KiB) of it and its children."""
    _, rss, status, out = timed_child(command, env, scratch)
    if status:
        raise SystemExit(f"ours failed with exit status {status}")
    return json.loads(out.strip().splitlines()[-1]), rss


def report(
    results: dict[str, dict[str, Any]],
    stored: dict[str, int],
    one_copy: dict[str, int],
    raw: int,
) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    o, r, t = results["ours"], results["restic"], results["tar"]
    rows = [
        ("", "ours (adapter)", "restic direct", "tar|zstd|aws", "ours/restic"),
        ("first backup", f"{o['first']:.1f} s", f"{r['first']:.1f} s", f"{t['first']:.1f} s",
         ratio(o["first"], r["first"])),
        ("second, unchanged", f"{o['second']:.1f} s", f"{r['second']:.1f} s",
         f"{t['second']:.1f} s", ratio(o["second"], r["second"])),
        ("one copy", f"{one_copy['ours'] / MiB:.0f} MiB", f"{one_copy['restic'] / MiB:.0f} MiB",
         f"{one_copy['tar'] / MiB:.0f} MiB", ratio(one_copy["ours"], one_copy["restic"])),
        ("stored after 7 days", f"{stored['ours'] / MiB:.0f} MiB",
         f"{stored['restic'] / MiB:.0f} MiB", f"{stored['tar'] / MiB:.0f} MiB",
         ratio(stored["ours"], stored["restic"])),
        ("stored / one copy", ratio(stored["ours"], one_copy["ours"]),
         ratio(stored["restic"], one_copy["restic"]), ratio(stored["tar"], one_copy["tar"]), ""),
        ("peak RSS", f"{o['rss'] / MiB:.0f} MiB + helper {o['helper_rss'] / MiB:.0f} MiB",
         f"{r['rss'] / MiB:.0f} MiB", f"{t['rss'] / MiB:.0f} MiB", ""),
    ]  # fmt: skip
    print(f"\n{raw / MiB:.0f} MiB of data (site + dump), moto's S3 on loopback")
    for row in rows:
        print(f"  {row[0]:<20} {row[1]:>30} {row[2]:>14} {row[3]:>14} {row[4]:>12}")
    print(json.dumps({"results": results, "stored": stored, "one_copy": one_copy}))


if __name__ == "__main__":
    raise SystemExit(main())
