"""Backups against the real parts: Docker, a MariaDB container, moto's S3 over HTTP."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from reconciler import labels
from reconciler.adapters import mariadb, volume_archive
from reconciler.adapters.object_store import S3Store, open_store
from reconciler.backup import backup_status
from reconciler.backup.backing_up import run_backup
from reconciler.backup.backup_jobs import BackupContext, backup_report
from reconciler.backup.backup_target import BackupTarget, open_target
from reconciler.backup.manifests import MANIFEST, Artifact, Manifest
from reconciler.backup.stored_backups import list_backups, prune, read_manifest, verify_backup
from reconciler.cli import backup as cli_backup
from reconciler.decide.retention import RetentionRules
from reconciler.errors import BackupBusy, DatabaseError, ReconcilerError, VerifyError
from reconciler.restore import restore_artifacts, restoring
from reconciler.restore.restore_artifacts import fetch_verified
from reconciler.settings import Settings, load_settings
from tests.conftest import TEST_HELPER_IMAGE
from tests.fixtures.docker_engine import remove_project
from tests.fixtures.restic_planting import flip_packs
from tests.fixtures.s3_server import Fault, FaultProxy
from tests.integration.backup_stack import (
    MARIADB,
    ROOT_PASSWORD,
    Stack,
    desired_state,
    listing,
    policy,
    run_sql,
    start_stack,
    wait_healthy,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(docker_client: docker.DockerClient) -> Iterator[Stack]:
    """One web + MariaDB stack for the module (MariaDB takes seconds to start)."""
    project = "bk" + uuid.uuid4().hex[:8]
    try:
        yield start_stack(docker_client, project)
    finally:
        remove_project(docker_client, project)


def s3_store(bucket: str, prefix: str = "prod", *, attempts: int = 2) -> S3Store:
    # Few attempts: each fault test waits out botocore's backoff once per attempt.
    return S3Store(bucket, prefix, max_attempts=attempts)


def target_of(store: Any, tmp_path: Path | None = None) -> BackupTarget:
    state = None if tmp_path is None else tmp_path / "state"
    return open_target(store.url, os.environ, state_dir=state)


def read_back(store: Any, artifact: Artifact, tmp_path: Path) -> Iterator[bytes]:
    """A part of a backup as a restore reads it: through the spool, verified, bounded."""
    ref = restoring.artifact_refs(dataclasses.replace(_EMPTY_MANIFEST, artifacts=(artifact,)))[0]
    folder = tmp_path / "spool"
    folder.mkdir(exist_ok=True)
    spooled = fetch_verified(target_of(store, tmp_path), ref, folder)
    yield from restore_artifacts.decompressed(ref, spooled)


_EMPTY_MANIFEST = Manifest(
    id="2026-01-01T00-00-00Z",
    time="",
    commit=None,
    host="h",
    project="p",
    artifacts=(),
    duration_s=0.0,
)


def backup(stack: Stack, store: Any, tmp_path: Path, **options: Any) -> Any:
    target_policy = policy(store.url, **options)
    return run_backup(
        client=stack.client,
        target=target_of(store, tmp_path),
        desired=stack.desired,
        policy=target_policy,
        state_dir=tmp_path / "state",
        commit="c0ffee",
        helper_image=TEST_HELPER_IMAGE,
    )


def test_volume_round_trip_keeps_owners_modes_links_mtimes_empty_dirs(
    stack: Stack, s3_bucket: str, tmp_path: Path
) -> None:
    store = s3_store(s3_bucket)
    result = backup(stack, store, tmp_path, with_db=False)
    (artifact,) = result.manifest.artifacts
    assert artifact.kind == "volume"
    assert artifact.snapshot

    fresh = f"{stack.project}_restored"
    stack.client.volumes.create(fresh, labels={labels.PROJECT: stack.project})
    volume_archive.write_volume(
        stack.client,
        volume=fresh,
        image="reconciler-local/busybox:latest",
        project=stack.project,
        chunks=read_back(store, artifact, tmp_path),
    )
    original = listing(stack.client, f"{stack.project}_site")
    restored = listing(stack.client, fresh)
    assert "./empty/nested-empty 0 0 755 dir" in original
    assert "link ../html/index.php" in original
    assert "./private/key.txt 999 998 600" in original
    assert restored == original
    # The helper containers are gone.
    helpers = stack.client.containers.list(
        all=True, filters={"label": [f"{labels.PROJECT}={stack.project}", labels.HELPER]}
    )
    assert helpers == []


def test_database_round_trip_into_a_fresh_container(
    stack: Stack, s3_bucket: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    store = s3_store(s3_bucket)
    result = backup(stack, store, tmp_path, volumes=False)
    (artifact,) = result.manifest.artifacts
    assert artifact.kind == "database"
    fresh_name = f"{stack.project}-fresh-db-1"
    fresh = docker_client.containers.run(
        MARIADB,
        name=fresh_name,
        detach=True,
        environment={"MARIADB_ROOT_PASSWORD": "another-password"},
        labels={labels.PROJECT: stack.project},
    )
    wait_healthy(fresh)
    mariadb.load_dump(
        docker_client, container=fresh_name, chunks=read_back(store, artifact, tmp_path)
    )
    # The dump carries the users too: the fresh server now has the original root password.
    counts = run_sql(
        fresh,
        "SELECT COUNT(*) FROM shop.orders; SELECT COUNT(*) FROM shop.customers;",
    )
    assert counts.split() == ["5", "2"]


def test_backup_list_verify_and_status(stack: Stack, s3_bucket: str, tmp_path: Path) -> None:
    store = s3_store(s3_bucket)
    result = backup(stack, store, tmp_path)
    manifest = result.manifest
    assert {a.kind for a in manifest.artifacts} == {"volume", "database"}
    assert manifest.commit == "c0ffee"
    assert manifest.project == stack.project
    target = target_of(store, tmp_path)
    listed = list_backups(target)
    assert [b.id for b in listed] == [manifest.id]
    assert listed[0].state == "complete"
    assert listed[0].size == manifest.size > 0
    assert read_manifest(target, manifest.id) == manifest
    assert verify_backup(target, manifest.id) == manifest
    status = backup_status.read_status(tmp_path / "state")
    assert status is not None
    assert status.result == "ok"
    assert status.size == manifest.size
    assert status.last_success_id == manifest.id


def test_verify_detects_a_tampered_object(stack: Stack, s3_bucket: str, tmp_path: Path) -> None:
    store = s3_store(s3_bucket)
    manifest = backup(stack, store, tmp_path).manifest
    assert flip_packs(s3_bucket, "prod") > 0
    with pytest.raises(VerifyError, match=r"does not read back.*ciphertext verification failed"):
        verify_backup(target_of(store, tmp_path), manifest.id)


def test_stopped_services_start_again_even_when_the_backup_fails(
    stack: Stack, s3_bucket: str, tmp_path: Path, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set(Fault(kind="status", status=503, methods=("PUT",)))
    store = s3_store(s3_bucket, attempts=1)
    with pytest.raises(ReconcilerError, match="injected by the test proxy"):
        backup(stack, store, tmp_path, stop_services=True, with_db=False)
    assert stack.running() == {"web": "running", "db": "running"}


def test_a_connection_dropped_once_is_retried(
    stack: Stack, s3_bucket: str, tmp_path: Path, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set(Fault(kind="drop", methods=("PUT",), times=1))
    store = s3_store(s3_bucket, attempts=3)
    manifest = backup(stack, store, tmp_path, with_db=False).manifest
    assert fault_proxy.injected == 1
    verify_backup(target_of(store, tmp_path), manifest.id)


FAULTS = {
    "s3-unreachable": "cannot be reached",
    "s3-5xx": "injected by the test proxy",
    "connection-dropped": "connection reset by peer",
    "wrong-credentials": "refused the credentials",
    "missing-bucket": "does not exist",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_store_faults_fail_the_backup_clearly(
    fault: str,
    stack: Stack,
    s3_bucket: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    bucket = s3_bucket
    if fault == "s3-unreachable":
        request.getfixturevalue("unreachable_endpoint")
    elif fault == "s3-5xx":
        proxy = request.getfixturevalue("fault_proxy")
        proxy.set(Fault(kind="status", status=503, methods=("PUT",)))
    elif fault == "connection-dropped":
        proxy = request.getfixturevalue("fault_proxy")
        proxy.set(Fault(kind="drop", methods=("PUT",), after_bytes=4096))
    elif fault == "wrong-credentials":
        request.getfixturevalue("s3_auth_enforced")
    elif fault == "missing-bucket":
        bucket = f"{s3_bucket}-absent"
    message = FAULTS[fault]
    store = s3_store(bucket)
    with pytest.raises(ReconcilerError, match=message):
        backup(stack, store, tmp_path)
    _assert_failed_cleanly(stack, s3_bucket, tmp_path, request)


def _assert_failed_cleanly(
    stack: Stack, bucket: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    status = backup_status.read_status(tmp_path / "state")
    assert status is not None
    assert status.result == "failed"
    assert status.error
    assert status.last_success_time is None
    # What is in the bucket (read past any fault): nothing complete, no manifest.
    server = request.getfixturevalue("s3_env")
    server.set_auth(False)
    import boto3

    direct = boto3.client("s3", endpoint_url=server.url)
    objects = direct.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert not [o for o in objects if o["Key"].endswith(MANIFEST)]
    uploads = direct.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == [], "a failed multipart upload must be aborted"
    assert stack.running() == {"web": "running", "db": "running"}


def test_database_down_fails_the_backup(
    docker_client: docker.DockerClient, s3_bucket: str, tmp_path: Path, project_name: str
) -> None:
    # A stack of its own whose database container exists but is stopped.
    stack = start_stack(docker_client, project_name, with_db=False)
    stopped = docker_client.containers.create(
        MARIADB,
        name=labels.container_name(project_name, "db"),
        environment={"MARIADB_ROOT_PASSWORD": ROOT_PASSWORD},
        labels={labels.PROJECT: project_name, labels.SERVICE: "db"},
    )
    stack.desired = desired_state(project_name)
    store = s3_store(s3_bucket)
    with pytest.raises(DatabaseError, match=r"not running .*the database is down"):
        backup(stack, store, tmp_path)
    assert [b for b in list_backups(target_of(store)) if b.state == "complete"] == []
    assert stack.container("web").status == "running"
    stopped.reload()
    assert stopped.status == "created"  # the backup never starts a database
    status = backup_status.read_status(tmp_path / "state")
    assert status is not None
    assert status.result == "failed"


def test_database_server_not_answering_fails_with_the_dump_error(
    docker_client: docker.DockerClient, s3_bucket: str, tmp_path: Path, project_name: str
) -> None:
    # The container runs, the server in it does not: mariadb-dump exits non-zero.
    stack = start_stack(docker_client, project_name, with_db=False)
    docker_client.containers.run(
        MARIADB,
        ["sleep", "3600"],
        entrypoint=[],
        name=labels.container_name(project_name, "db"),
        detach=True,
        environment={"MARIADB_ROOT_PASSWORD": ROOT_PASSWORD},
        labels={labels.PROJECT: project_name, labels.SERVICE: "db"},
    )
    store = s3_store(s3_bucket)
    with pytest.raises(DatabaseError, match=r"mariadb-dump .* failed \(exit 2\)"):
        backup(stack, store, tmp_path)
    assert [b for b in list_backups(target_of(store)) if b.state == "complete"] == []


def test_two_backups_never_run_at_once(stack: Stack, s3_bucket: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from reconciler.backup.backing_up import backup_lock
                with backup_lock(Path({str(state)!r})):
                    print("locked", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(BackupBusy, match=f"another backup is running \\(pid {holder.pid}"):
            backup(stack, s3_store(s3_bucket), tmp_path)
    finally:
        assert holder.stdin is not None
        holder.stdin.write(b"\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    # Free again: the next one runs.
    assert backup(stack, s3_store(s3_bucket), tmp_path, with_db=False).manifest.artifacts


def test_retention_against_the_s3_server(s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}/ret")
    days = [f"2026-10-{d:02d}T05-04-00Z" for d in range(1, 32)]
    for ident in days:
        store.put_bytes(f"{ident}/volumes/site.tar.zst", b"x" * 10)
        if ident != "2026-10-20T05-04-00Z":  # a failed run: no manifest
            store.put_bytes(f"{ident}/{MANIFEST}", b"{}")
    store.put_bytes("2026-11-01T05-04-00Z/volumes/site.tar.zst", b"in progress")
    rules = RetentionRules(daily=3, weekly=2, monthly=1)
    target = open_target(store.url, os.environ)
    planned = prune(target, rules, dry_run=True)
    assert {b.id for b in list_backups(target)} == {*days, "2026-11-01T05-04-00Z"}
    decision = prune(target, rules, dry_run=False)
    assert decision == planned
    left = {b.id: b.state for b in list_backups(target)}
    assert left == {
        "2026-11-01T05-04-00Z": "incomplete",  # newer than the newest complete: may be running
        "2026-10-31T05-04-00Z": "complete",  # newest, daily, weekly, monthly
        "2026-10-30T05-04-00Z": "complete",  # daily
        "2026-10-29T05-04-00Z": "complete",  # daily
        "2026-10-25T05-04-00Z": "complete",  # weekly: newest of ISO week 43
    }


def test_retention_counts_back_from_the_time_the_backup_run_gives(tmp_path: Path) -> None:
    """A run's clock is the prune's ``now``: the 'within a day' rule keeps the day's
    first backup by the run's time, not by the machine's (a bench's day, a test's)."""
    store = open_store(f"file://{tmp_path}/ret")
    for ident in ("2026-10-30T05-04-00Z", "2026-10-31T05-04-00Z", "2026-10-31T17-04-00Z"):
        store.put_bytes(f"{ident}/volumes/site.tar.zst", b"x")
        store.put_bytes(f"{ident}/{MANIFEST}", b"{}")
    rules = RetentionRules(daily=1, weekly=0, monthly=0, last=1)
    target = open_target(store.url, os.environ)
    then = datetime(2026, 10, 31, 18, 0, tzinfo=UTC)
    assert prune(target, rules, dry_run=True, now=then).delete == ("2026-10-30T05-04-00Z",)
    # From today, a month on, the day's first backup is no longer young.
    assert prune(target, rules, dry_run=True).delete == (
        "2026-10-31T05-04-00Z",
        "2026-10-30T05-04-00Z",
    )


def test_file_target_round_trip(stack: Stack, tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/backups")
    manifest = backup(stack, store, tmp_path).manifest
    verify_backup(target_of(store, tmp_path), manifest.id)
    # A restic repository, nothing else, and nothing of it readable by others.
    top = {p.name for p in (tmp_path / "backups").iterdir()}
    assert top == {"config", "data", "index", "keys", "locks", "snapshots"}
    for path in (tmp_path / "backups").rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path


# -- the commands, the daemon job and the status report ---------------------------


def run_cli(argv: list[str], loader: Any, settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    cli_backup.register(commands, loader)
    args = parser.parse_args(argv)
    return int(args.handler(args, settings))


def test_commands_run_list_verify_prune(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        environ={**os.environ, "RECONCILER_STATE_DIR": str(tmp_path / "state")}
    )
    target = f"file://{tmp_path}/backups"

    def loader(_settings: Settings) -> BackupContext:
        return BackupContext(
            settings=settings,
            desired=stack.desired,
            policy=policy(target),
            commit="c0ffee",
            client_factory=docker.from_env,
            helper_image=TEST_HELPER_IMAGE,
        )

    assert run_cli(["backup", "run"], loader, settings) == 0
    assert "2 artifacts" in capsys.readouterr().out
    assert run_cli(["backup", "list", "--json"], loader, settings) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["state"] == "complete"
    ident = listed["id"]
    assert run_cli(["backup", "verify", ident], loader, settings) == 0
    assert "2 artifacts verified" in capsys.readouterr().out
    assert run_cli(["backup", "prune", "--dry-run"], loader, settings) == 0
    assert (
        f"keep    {ident}  (newest, last, within, daily, weekly, monthly)"
        in capsys.readouterr().out
    )

    report = backup_report(settings)
    assert report["last"]["result"] == "ok"
    assert report["last"]["id"] == ident
    assert report["error"] is None

    # Damage every pack: verify exits 1 and says what does not read back.
    for pack in (tmp_path / "backups" / "data").rglob("*"):
        if pack.is_file():
            data = bytearray(pack.read_bytes())
            data[len(data) // 2] ^= 0xFF
            pack.write_bytes(bytes(data))
    assert run_cli(["backup", "verify", ident, "--target", target], loader, settings) == 1
    assert "does not read back" in capsys.readouterr().err

    # An id that is not in the target.
    assert run_cli(["backup", "verify", "2026-01-01T00-00-00Z"], loader, settings) == 1
    assert "no backup 2026-01-01T00-00-00Z" in capsys.readouterr().err


def test_a_failed_run_exits_1_and_shows_in_status(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str], unreachable_endpoint: str
) -> None:
    settings = load_settings(
        environ={**os.environ, "RECONCILER_STATE_DIR": str(tmp_path / "state")}
    )

    def loader(_settings: Settings) -> BackupContext:
        return BackupContext(
            settings=settings,
            desired=stack.desired,
            policy=policy("s3://rt-unreachable/prod"),
            commit="c0ffee",
            helper_image=TEST_HELPER_IMAGE,
        )

    assert run_cli(["backup", "run"], loader, settings) == 1
    assert "cannot be reached" in capsys.readouterr().err
    report = backup_report(settings)
    assert report["last"]["result"] == "failed"
    assert "cannot be reached" in report["error"]


FAKE_DUMPS = {
    # Exits 0 but stops early: only the missing trailer gives it away.
    "truncated": (
        "printf -- '-- MariaDB dump\\nINSERT INTO t VALUES (1);\\n'; exit 0",
        "truncated",
    ),
    # Part of the dump, then the server goes away.
    "lost-connection": (
        "printf -- '-- MariaDB dump\\nINSERT INTO t VALUES (1);\\n'; "
        "echo 'mariadb-dump: Error 2013: Lost connection to server during query' >&2; exit 2",
        r"failed \(exit 2\) .*Lost connection",
    ),
}


@pytest.mark.parametrize("case", sorted(FAKE_DUMPS))
def test_a_dump_that_fails_part_way_fails_the_backup(
    case: str,
    docker_client: docker.DockerClient,
    s3_bucket: str,
    tmp_path: Path,
    project_name: str,
) -> None:
    script, message = FAKE_DUMPS[case]
    # A stand-in database container whose mariadb-dump misbehaves on purpose.
    setup = (
        f"printf '%s\\n' '#!/bin/sh' {shlex.quote(script)} > /bin/mariadb-dump && "
        "chmod +x /bin/mariadb-dump && exec sleep 3600"
    )
    stack = start_stack(docker_client, project_name, with_db=False)
    docker_client.containers.run(
        "reconciler-local/busybox:latest",
        ["sh", "-c", setup],
        name=labels.container_name(project_name, "db"),
        detach=True,
        labels={labels.PROJECT: project_name, labels.SERVICE: "db"},
    )
    stack.desired = desired_state(project_name)
    store = s3_store(s3_bucket)
    deadline = time.monotonic() + 30
    while stack.container("db").exec_run(["test", "-x", "/bin/mariadb-dump"]).exit_code:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with pytest.raises(ReconcilerError, match=message):
        backup(stack, store, tmp_path, volumes=False)
    assert [b for b in list_backups(target_of(store)) if b.state == "complete"] == []


def test_a_backup_removes_the_helper_a_killed_backup_left_and_no_other(
    stack: Stack, tmp_path: Path
) -> None:
    # Found by tests/faults/test_kill_backup.py: a backup SIGKILLed while it
    # read a volume left its helper container behind, and nothing removed it.
    labelled = {labels.PROJECT: stack.project}
    left = stack.client.containers.create(
        "reconciler-local/busybox:latest",
        ["true"],
        name=f"{stack.project}-helper-backup-killed",
        labels={**labelled, labels.HELPER: "backup"},
    )
    drill = stack.client.containers.create(
        "reconciler-local/busybox:latest",
        ["true"],
        name=f"{stack.project}-helper-drill-in-use",
        labels={**labelled, labels.HELPER: "drill"},
    )
    try:
        backup(stack, open_store(f"file://{tmp_path}/backups"), tmp_path, with_db=False)
        names = {
            c.name
            for c in stack.client.containers.list(
                all=True, filters={"label": [f"{labels.PROJECT}={stack.project}", labels.HELPER]}
            )
        }
        assert names == {drill.name}
    finally:
        for container in (left, drill):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
