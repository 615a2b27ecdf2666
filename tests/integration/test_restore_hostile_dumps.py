"""Planted dumps against the real engine and MariaDB: refused before anything changes.

The attacker can write to the backup target but holds nothing of the VM: they
take a real backup, change its dump and recompute the checksums in
``manifest.json``. Each test would fail on main at e56afd9 (the dump's lines ran
as root in the database container, and ``my shop`` was never dropped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import zstandard

from reconciler.adapters import mariadb
from reconciler.adapters.object_store import FileStore, ObjectStore
from reconciler.runtime.backing_up import MANIFEST, read_manifest, run_backup
from reconciler.runtime.restoring import RestoreContext, RestoreFailed, RestoreOptions, run_restore
from tests.fixtures.docker_engine import remove_project
from tests.integration.backup_stack import Stack, policy, run_sql, start_stack

pytestmark = pytest.mark.integration

STATE = "SELECT COUNT(*) FROM shop.orders; SELECT COUNT(*) FROM mysql.user;"


@pytest.fixture(scope="module")
def stack(docker_client: docker.DockerClient) -> Iterator[Stack]:
    project = "rh" + uuid.uuid4().hex[:8]
    try:
        yield start_stack(docker_client, project)
    finally:
        remove_project(docker_client, project)


def context(stack: Stack, tmp_path: Path, target: str) -> RestoreContext:
    return RestoreContext(
        client=stack.client,
        desired=stack.desired,
        state_dir=tmp_path / "state",
        default_source=target,
        safety_target=target,
    )


def backup(stack: Stack, tmp_path: Path) -> tuple[str, FileStore]:
    target = f"file://{tmp_path / 'backups'}"
    store = FileStore(tmp_path / "backups")
    run_backup(
        client=stack.client,
        store=store,
        desired=stack.desired,
        policy=policy(target),
        state_dir=tmp_path / "state",
    )
    return target, store


def plant(store: ObjectStore, change: Callable[[bytes], bytes]) -> None:
    """Rewrite the newest backup's dump and its manifest entry, as an attacker would."""
    ident = _newest(store)
    manifest = read_manifest(store, ident)
    artifacts = []
    for artifact in manifest.artifacts:
        if artifact.kind == "database":
            stored = io.BytesIO(b"".join(store.get_stream(artifact.key)))
            reader = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True)
            raw = reader.read()
            data = zstandard.ZstdCompressor().compress(change(raw))
            store.put_bytes(artifact.key, data)
            artifact = dataclasses.replace(
                artifact, size=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
        artifacts.append(artifact)
    planted = dataclasses.replace(manifest, artifacts=tuple(artifacts))
    store.put_bytes(f"{ident}/{MANIFEST}", planted.to_json())


def _newest(store: ObjectStore) -> str:
    from reconciler.runtime.backing_up import list_backups

    return list_backups(store)[0].id


def after_shop(sql: bytes) -> Callable[[bytes], bytes]:
    """``sql`` after ``USE `shop`;``, and mariadb-dump's own sandbox line taken out."""
    marker = b"USE `shop`;\n"

    def change(raw: bytes) -> bytes:
        raw = raw.replace(b"/*M!999999\\- enable the sandbox mode */", b"", 1)
        assert b"sandbox" not in raw.split(b"\n", 1)[0]
        return raw.replace(marker, marker + sql, 1)

    return change


def no_file(stack: Stack, path: str) -> bool:
    return stack.container("db").exec_run(["test", "-e", path]).exit_code != 0


def test_a_dump_with_shell_commands_is_refused_and_nothing_changes(
    stack: Stack, tmp_path: Path
) -> None:
    target, store = backup(stack, tmp_path)
    plant(store, after_shop(b"\\! touch /tmp/pwned\nsystem touch /tmp/pwned-system\n"))
    run_sql(stack.container("db"), "INSERT INTO shop.orders (item) VALUES ('after backup');")
    before = run_sql(stack.container("db"), STATE)
    with pytest.raises(RestoreFailed) as caught:
        run_restore("h1", RestoreOptions(), context(stack, tmp_path, target))
    message = str(caught.value)
    assert "databases/db.sql.zst: line " in message
    assert "client command '\\!' refused" in message
    assert "nothing was overwritten" in message
    assert caught.value.touched is False
    assert not store.list("pre-restore/")  # refused before the safety copy and any stop
    assert run_sql(stack.container("db"), STATE) == before
    assert no_file(stack, "/tmp/pwned")
    assert no_file(stack, "/tmp/pwned-system")
    assert stack.running() == {"web": "running", "db": "running"}


def test_the_load_itself_runs_in_sandbox_mode(stack: Stack) -> None:
    # The second wall, without the screener: the client refuses \! and system.
    for line in (b"\\! touch /tmp/pwned-load\n", b"system touch /tmp/pwned-load\n"):
        with pytest.raises(mariadb.DatabaseError):
            mariadb.load_dump(stack.client, container=stack.container("db").name, chunks=[line])
    assert no_file(stack, "/tmp/pwned-load")


def test_a_dump_that_creates_an_account_is_refused(stack: Stack, tmp_path: Path) -> None:
    target, store = backup(stack, tmp_path)
    plant(
        store,
        after_shop(
            b"CREATE USER 'evil'@'%' IDENTIFIED BY 'x';\n"
            b"GRANT ALL PRIVILEGES ON *.* TO 'evil'@'%' WITH GRANT OPTION;\n"
        ),
    )
    before = run_sql(stack.container("db"), STATE)
    with pytest.raises(RestoreFailed) as caught:
        run_restore("h2", RestoreOptions(), context(stack, tmp_path, target))
    assert "account statement CREATE USER refused" in str(caught.value)
    assert run_sql(stack.container("db"), STATE) == before
    users = run_sql(stack.container("db"), "SELECT COUNT(*) FROM mysql.user WHERE user='evil'")
    assert users.strip() == "0"


def test_a_database_whose_name_has_a_space_is_dropped_and_restored(
    stack: Stack, tmp_path: Path
) -> None:
    db = stack.container("db")
    run_sql(
        db,
        "CREATE DATABASE `my shop`; CREATE TABLE `my shop`.`a table` (n INT);"
        "INSERT INTO `my shop`.`a table` VALUES (1),(2);"
        "CREATE DATABASE `we``ird`; CREATE TABLE `we``ird`.t (n INT);",
    )
    target, _store = backup(stack, tmp_path)
    run_sql(
        db,
        "INSERT INTO `my shop`.`a table` VALUES (3);"
        "CREATE TABLE `my shop`.`after backup` (n INT);"
        "CREATE TABLE `we``ird`.`after` (n INT);",
    )
    run_restore("h3", RestoreOptions(volumes=()), context(stack, tmp_path, target))
    tables = run_sql(
        db,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('my shop', 'we`ird') ORDER BY 1, 2",
    )
    assert tables.splitlines() == ["my shop\ta table", "we`ird\tt"]
    assert run_sql(db, "SELECT COUNT(*) FROM `my shop`.`a table`").strip() == "2"
