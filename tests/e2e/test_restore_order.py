# ruff: noqa: F811 - the tests take the imported ``env`` fixture by name
"""The order of a restore against the real engine, MariaDB and moto's S3, through the real CLI.

Stop before the safety copy; put the safety copy back when a step fails after
writing began; refuse when the spool has no room; say what it replaces before asking.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.restic_helper import volume_path
from reconciler.backup.backup_target import open_target
from reconciler.backup.stored_backups import list_backups, read_manifest
from tests.e2e.test_restore import Env, compose, env  # noqa: F401 (the fixture)
from tests.fixtures.restic_planting import newer_id, plant_backup, repository
from tests.integration.backup_stack import run_sql

pytestmark = pytest.mark.integration

WRITER = """\
  writer:
    image: reconciler-local/busybox:latest
    command:
      - sh
      - -c
      - >-
        trap 'echo stopped >> /data/seq.log; exit 0' TERM;
        i=0; while true; do i=$$((i+1)); echo $$i >> /data/seq.log; usleep 20000; done
    volumes: ["site:/data"]
    stop_grace_period: 5s
"""


def with_writer() -> str:
    text = compose()
    return text.replace("volumes:\n  site:", WRITER + "volumes:\n  site:", 1)


def _member(env: Env, source: str, backup: str, name: str, path: str) -> bytes:
    """One file of volume ``name`` in ``backup`` of ``source``, read with restic."""
    target = open_target(source, {**os.environ, **env.environ})
    artifact = next(a for a in read_manifest(target, backup).artifacts if a.name == name)
    out = io.BytesIO()
    target.repository().dump(artifact.snapshot, f"{volume_path(name)}/{path}", out)
    return out.getvalue()


def test_the_safety_copy_is_taken_after_the_writers_stopped(env: Env) -> None:
    env.remote.commit_files({"desired-state/compose.yaml": with_writer()})
    env.cli.run("sync", check=True)
    env.backup()
    result = env.cli.run("restore", "latest", "--yes", "--id", "w1")
    assert result.returncode == 0, result.stderr[-3000:]
    record = env.restores()["w1"]
    assert record["safety_copy"] == f"s3://{env.bucket}/prod/pre-restore/w1"
    copy = record["safety_copy_backup"]
    lines = _member(env, record["safety_copy"], copy, "site", "seq.log").decode().split()
    # The writer's last word, written as it stopped, is the copy's last line:
    # nothing the writer wrote is missing, and nothing was written after the copy began.
    assert lines[-1] == "stopped", lines[-5:]
    assert [int(n) for n in lines[:-1]] == list(range(1, len(lines)))
    done = record["done"]
    assert done.index("stopped writer") < next(
        i for i, s in enumerate(done) if s.startswith("safety copy ")
    )
    assert env.container("writer").status == "running"


def _plant_failing_dump(env: Env, backup: str) -> None:
    """A newer backup whose dump fails at its end, planted with the key (a PC holds it too)."""
    environ = {**os.environ, **env.environ}
    repo = repository(f"s3://{env.bucket}/prod", environ)
    plant_backup(
        repo,
        from_ident=backup,
        new_ident=newer_id(backup),
        change_dump=lambda dump: dump + b"\nINSERT INTO shop.no_such_table VALUES (1);\n",
    )


def test_a_restore_failing_after_it_wrote_puts_the_safety_copy_back(env: Env) -> None:
    good = env.backup()
    _plant_failing_dump(env, good)
    env.sh("echo before-restore > /data/before.txt && rm -rf /data/html")
    run_sql(env.container("db"), "INSERT INTO shop.orders (item) VALUES ('kept');")
    files, rows = env.files(), env.rows()
    result = env.cli.run("restore", "latest", "--yes", "--id", "f1")
    assert result.returncode == 1
    assert "no_such_table" in result.stderr  # what failed
    assert "the safety copy" in result.stderr
    assert "was put back" in result.stderr
    assert env.files() == files
    assert env.rows() == rows
    assert {env.container(s).status for s in ("web", "db")} == {"running"}
    record = env.restores()["f1"]
    assert record["state"] == "failed"
    assert record["put_back"] == "ok"
    assert any(s.startswith("restored volume") for s in record["done"])
    assert "putting the safety copy back" in record["done"]


def test_no_room_in_the_spool_refuses_and_changes_nothing(env: Env, tmp_path: Path) -> None:
    # The spool holds the dumps (volumes are staged on the engine's disk):
    # 4 MB of rows that do not compress.
    run_sql(
        env.container("db"),
        "CREATE TABLE shop.blobs (b LONGBLOB); "
        "INSERT INTO shop.blobs VALUES (RANDOM_BYTES(1024)); "
        + "INSERT INTO shop.blobs SELECT RANDOM_BYTES(1024) FROM shop.blobs; "
        * 12,
    )
    env.backup()
    env.sh("echo later > /data/later.txt")
    files, rows = env.files(), env.rows()
    started = env.container("web").attrs["State"]["StartedAt"]
    spool = tmp_path / "spool"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(spool)], check=True)
    try:
        env.cli.env["RECONCILER_SPOOL_DIR"] = str(spool)
        result = env.cli.run("restore", "latest", "--yes", "--id", "s1")
    finally:
        subprocess.run(["umount", str(spool)], check=True)
    assert result.returncode == 1
    needed = re.search(rf"needs (\d+) MB in {re.escape(str(spool))}/restore-tmp/s1", result.stderr)
    assert needed is not None, result.stderr
    assert int(needed[1]) > 64 + 4  # the 4 MB of rows, dumped, plus the headroom
    assert "MB free" in result.stderr
    assert "RECONCILER_SPOOL_DIR" in result.stderr
    assert "nothing was overwritten" in result.stderr
    assert env.files() == files
    assert env.rows() == rows
    assert env.container("web").attrs["State"]["StartedAt"] == started
    safety = open_target(f"s3://{env.bucket}/prod/pre-restore/s1", {**os.environ, **env.environ})
    assert list_backups(safety) == []


def test_restore_latest_says_what_it_is_and_replaces_before_asking(env: Env) -> None:
    good = env.backup()
    env.sh("echo later > /data/later.txt")
    files = env.files()
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "restore", "latest", "--id", "c1"],
        env=env.cli.env,
        cwd=env.cli.cwd,
        input="no\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    text = result.stdout + result.stderr
    manifest = read_manifest(
        open_target(f"s3://{env.bucket}/prod", {**os.environ, **env.environ}), good
    )
    assert f"Backup {good} from s3://{env.bucket}/prod" in text
    assert manifest.time in text
    assert manifest.host in text
    total = sum(a.size for a in manifest.artifacts)
    assert f"{total / 1e6:.1f} MB stored" in text
    assert "volume site (" in text
    assert "database db (" in text
    assert "stop services web" in text
    assert f"replace Docker volume {env.project}_site" in text
    assert f"user databases of {env.project}-db-1" in text
    assert f"s3://{env.bucket}/prod/pre-restore/c1" in text
    assert "nothing was changed" in text
    assert env.files() == files
    assert env.cli.status()["restores"] == []
