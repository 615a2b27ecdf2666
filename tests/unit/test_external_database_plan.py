"""An external database in a restore plan, and the client commands that reach it."""

from __future__ import annotations

import pytest

from reconciler.adapters.mariadb import CA_PATH, RemoteServer, client_command, dump_command
from reconciler.decide.restore_planning import ArtifactRef, RestorePlanError, plan_restore
from reconciler.model.backup_policy import ExternalDatabase
from reconciler.model.desired import Dependency, DesiredState, ServiceSpec


def desired() -> DesiredState:
    return DesiredState(
        project="shop",
        services={
            "web": ServiceSpec(name="web", image="busybox"),
            "worker": ServiceSpec(
                name="worker", image="busybox", depends_on=(Dependency(service="web"),)
            ),
        },
        networks={},
        volumes={},
    )


ENTRY = ExternalDatabase(
    name="shopdb",
    host="db.internal.example",
    user="backup",
    password_from="SHOP_DB_PASSWORD",
    databases=("shop",),
    stop_services=("web",),
    password="correct-horse-battery",
)


def test_a_dump_of_an_external_database_is_planned_for_its_server() -> None:
    plan = plan_restore(
        artifacts=[ArtifactRef("database", "shopdb", "x/databases/shopdb", 10, "")],
        desired=desired(),
        externals={"shopdb": ENTRY},
    )
    (database,) = plan.databases
    assert database.external is ENTRY
    assert database.container == ""
    # Its entry's users are stopped; nothing depends on a server outside the stack.
    assert plan.stop == ("web",)


def test_without_its_entry_the_dump_is_refused() -> None:
    with pytest.raises(RestorePlanError, match=r"external database of backup\.yaml"):
        plan_restore(
            artifacts=[ArtifactRef("database", "shopdb", "x/databases/shopdb", 10, "")],
            desired=desired(),
        )


def test_the_commands_carry_the_server_and_tls_never_the_password() -> None:
    remote = RemoteServer(
        host="10.0.0.5", port=3307, user="backup", databases=("shop", "logs"), password="pw-123456"
    )
    dump = dump_command(remote)
    assert dump[:5] == [
        "mariadb-dump",
        "--host=10.0.0.5",
        "--port=3307",
        "--user=backup",
        "--protocol=TCP",
    ]
    assert "--skip-ssl" in dump
    assert "--all-databases" not in dump
    assert "--user=root" not in dump
    assert dump[-3:] == ["--databases", "shop", "logs"]
    assert "--single-transaction" in dump
    assert all("pw-123456" not in part for part in dump)
    assert remote.environment() == {"MYSQL_PWD": "pw-123456"}
    assert "pw-123456" not in repr(remote)
    required = RemoteServer(host="h", port=1, user="u", databases=("d",), tls="required")
    assert client_command(required, "-e", "SELECT 1")[-4:] == [
        "--ssl",
        "--skip-ssl-verify-server-cert",
        "-e",
        "SELECT 1",
    ]
    verify = RemoteServer(host="h", port=1, user="u", databases=("d",), tls="verify")
    assert verify.options()[-3:] == ["--ssl", f"--ssl-ca={CA_PATH}", "--ssl-verify-server-cert"]
    assert client_command(None, "-e", "x") == ["mariadb", "--user=root", "-e", "x"]
