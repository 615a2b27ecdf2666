"""Planted dumps against the real engine and MariaDB: refused before anything changes.

The attacker holds the backup key (a developer's PC does) but nothing of the
VM: they read a real backup, change its dump and write it back as a newer
backup, which restic reads as authentic. Each test would fail on main at
e56afd9 (the dump's lines ran as root in the database container, and ``my
shop`` was never dropped).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from reconciler.adapters import mariadb
from reconciler.adapters.object_store import FileStore
from reconciler.backup.backing_up import run_backup
from reconciler.backup.backup_target import open_target
from reconciler.backup.stored_backups import list_backups
from reconciler.errors import DatabaseError, RestoreFailed
from reconciler.restore.restoring import RestoreContext, RestoreOptions, run_restore
from tests.conftest import TEST_HELPER_IMAGE
from tests.fixtures.docker_engine import remove_project
from tests.fixtures.restic_planting import newer_id, plant_backup, repository
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
        environ=os.environ,
    )


def backup(stack: Stack, tmp_path: Path) -> tuple[str, FileStore]:
    target = f"file://{tmp_path / 'backups'}"
    store = FileStore(tmp_path / "backups")
    run_backup(
        client=stack.client,
        target=open_target(target, os.environ, state_dir=tmp_path / "state"),
        desired=stack.desired,
        policy=policy(target),
        state_dir=tmp_path / "state",
        helper_image=TEST_HELPER_IMAGE,
    )
    return target, store


def plant(target: str, change: Callable[[bytes], bytes]) -> None:
    """The newest backup with its dump changed, written back as a newer one with the key."""
    newest = list_backups(open_target(target, os.environ))[0].id
    plant_backup(
        repository(target, os.environ),
        from_ident=newest,
        new_ident=newer_id(newest),
        change_dump=change,
    )


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
    target, _store = backup(stack, tmp_path)
    plant(target, after_shop(b"\\! touch /tmp/pwned\nsystem touch /tmp/pwned-system\n"))
    run_sql(stack.container("db"), "INSERT INTO shop.orders (item) VALUES ('after backup');")
    before = run_sql(stack.container("db"), STATE)
    with pytest.raises(RestoreFailed) as caught:
        run_restore("h1", RestoreOptions(), context(stack, tmp_path, target))
    message = str(caught.value)
    assert "databases/db: line " in message
    assert "client command '\\!' refused" in message
    assert "nothing was overwritten" in message
    assert caught.value.touched is False
    # Refused before the safety copy and any stop.
    assert list_backups(open_target(f"{target}/pre-restore/h1", os.environ)) == []
    assert run_sql(stack.container("db"), STATE) == before
    assert no_file(stack, "/tmp/pwned")
    assert no_file(stack, "/tmp/pwned-system")
    assert stack.running() == {"web": "running", "db": "running"}


def test_the_load_itself_runs_in_sandbox_mode(stack: Stack) -> None:
    # The second wall, without the screener: the client refuses \! and system.
    for line in (b"\\! touch /tmp/pwned-load\n", b"system touch /tmp/pwned-load\n"):
        with pytest.raises(DatabaseError):
            mariadb.load_dump(stack.client, container=stack.container("db").name, chunks=[line])
    assert no_file(stack, "/tmp/pwned-load")


def test_a_dump_that_creates_an_account_is_refused(stack: Stack, tmp_path: Path) -> None:
    target, _store = backup(stack, tmp_path)
    plant(
        target,
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
