"""Backups through the real CLI and daemon: backup run, list, verify, status, a missed run."""

from __future__ import annotations

import json
import signal
import time

import boto3
import pytest

# The stack (web, MariaDB, backup.yaml to moto's S3) of the restore tests.
from tests.e2e.test_restore import Env, env  # noqa: F401

pytestmark = pytest.mark.integration


def test_backup_commands_on_the_applied_commit(env: Env) -> None:  # noqa: F811
    result = env.cli.run("backup", "run")
    assert result.returncode == 0, result.stderr[-3000:]

    listed = env.cli.run("backup", "list", "--json", check=True)
    backups = json.loads(listed.stdout)
    assert isinstance(backups, list)
    assert len(backups) == 1
    backup_id = backups[0]["id"]
    assert backups[0].get("state") in {"complete", "ok", "good"}

    verified = env.cli.run("backup", "verify", backup_id)
    assert verified.returncode == 0, verified.stderr[-3000:]

    status = env.cli.status()
    assert status["backup"]["last"]["result"] in {"succeeded", "ok", "success"}
    assert status["backup"]["last"]["id"] == backup_id
    assert "last backup:" in env.cli.run("status", check=True).stdout

    # A flipped byte in any of restic's packs fails verification: restic
    # authenticates every blob it reads back, and verify reads them all.
    s3 = boto3.client("s3")
    packs = s3.list_objects_v2(Bucket=env.bucket, Prefix="prod/data/")["Contents"]
    for pack in packs:
        body = bytearray(s3.get_object(Bucket=env.bucket, Key=pack["Key"])["Body"].read())
        body[len(body) // 2] ^= 0xFF
        s3.put_object(Bucket=env.bucket, Key=pack["Key"], Body=bytes(body))
    tampered = env.cli.run("backup", "verify", backup_id)
    assert tampered.returncode == 1
    assert "does not read back" in tampered.stderr, tampered.stderr


def test_daemon_runs_a_missed_backup_at_start(env: Env) -> None:  # noqa: F811
    daemon = env.cli.popen("run")
    try:
        deadline = time.monotonic() + 180
        backups: list[dict[str, object]] = []
        while time.monotonic() < deadline and not backups:
            time.sleep(2)
            listed = env.cli.run("backup", "list", "--json")
            if listed.returncode == 0:
                backups = json.loads(listed.stdout)
        assert backups, "the daemon did not run the missed backup"
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, err[-3000:]
