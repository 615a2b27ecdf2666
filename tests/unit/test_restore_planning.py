"""Restore planning: which requests are due given the ledger, and what a request writes."""

from __future__ import annotations

import pytest

from reconciler.decide.restore_planning import (
    ArtifactRef,
    LedgerState,
    RestorePlanError,
    due_requests,
    plan_restore,
)
from reconciler.model.restore_requests import RestoreRequest
from tests.unit.test_restore_requests import desired

SITE = ArtifactRef("volume", "site", "B/volumes/site.tar.zst", 10, "a" * 64)
DBDATA = ArtifactRef("volume", "dbdata", "B/volumes/dbdata.tar.zst", 10, "b" * 64)
DB = ArtifactRef("database", "db", "B/databases/db.sql.zst", 10, "c" * 64)


def requests(*ids: str) -> list[RestoreRequest]:
    return [RestoreRequest(id=i) for i in ids]


@pytest.mark.parametrize(
    ("ledger", "expected"),
    [
        ({}, ["a", "b", "c"]),
        ({"a": "succeeded"}, ["b", "c"]),
        ({"a": "failed", "b": "interrupted", "c": "running"}, []),
        ({"b": "pending"}, ["a", "b", "c"]),
        ({"a": "succeeded", "b": "pending", "zz": "failed"}, ["b", "c"]),
    ],
)
def test_due_requests_in_file_order(ledger: dict[str, LedgerState], expected: list[str]) -> None:
    assert [r.id for r in due_requests(requests("a", "b", "c"), ledger)] == expected


def test_everything_in_the_backup_by_default() -> None:
    plan = plan_restore(artifacts=[SITE, DB], desired=desired())
    assert [(v.key, v.volume) for v in plan.volumes] == [("site", "shop_site")]
    assert [(d.service, d.container) for d in plan.databases] == [("db", "shop-db-1")]
    # web mounts site and depends on db; db itself must run to load its dump.
    assert plan.stop == ("web",)
    assert plan.artifacts == (SITE, DB)
    assert plan.describe() == "volume site, database db"


def test_subsets() -> None:
    only_db = plan_restore(artifacts=[SITE, DB], desired=desired(), volumes=())
    assert only_db.volumes == ()
    assert only_db.stop == ("web",)  # it depends on the database being loaded
    only_site = plan_restore(artifacts=[SITE, DB], desired=desired(), databases=())
    assert only_site.databases == ()
    assert only_site.stop == ("web",)
    data_files = plan_restore(
        artifacts=[SITE, DBDATA, DB], desired=desired(), volumes=["dbdata"], databases=[]
    )
    assert data_files.stop == ("db",)


@pytest.mark.parametrize(
    ("artifacts", "volumes", "databases", "message"),
    [
        ([DB], ["site"], None, "the backup has no volume 'site' (it has: none)"),
        ([SITE], None, ["db"], "the backup has no database 'db' (it has: none)"),
        (
            [ArtifactRef("volume", "uploads", "k", 1, "d" * 64)],
            None,
            None,
            "the backup holds volume 'uploads', which desired-state/compose.yaml does not declare",
        ),
        (
            [ArtifactRef("database", "cache", "k", 1, "d" * 64)],
            None,
            None,
            "dump of database service 'cache', which is not a MariaDB service",
        ),
        ([SITE, DB], [], [], "nothing to restore"),
    ],
)
def test_what_cannot_be_restored(
    artifacts: list[ArtifactRef],
    volumes: list[str] | None,
    databases: list[str] | None,
    message: str,
) -> None:
    with pytest.raises(RestorePlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_restore(artifacts=artifacts, desired=desired(), volumes=volumes, databases=databases)
