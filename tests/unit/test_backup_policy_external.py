"""backup.yaml's external_databases: a MariaDB outside the stack, every error at its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.errors import InvalidDesiredState
from reconciler.model.backup_policy import (
    BackupPolicy,
    host_problem,
    load_backup_policy,
    parse_backup_policy,
)
from reconciler.model.desired import DesiredState, NetworkSpec, ServiceSpec

DEFAULT_TARGET = "file:///var/lib/reconciler/backups"
PATH = "desired-state/backup.yaml"
ENV = {"SHOP_DB_PASSWORD": "correct-horse-battery"}
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def desired(*, with_db: bool = True) -> DesiredState:
    services = {"web": ServiceSpec(name="web", image="litespeedtech/openlitespeed:1.8")}
    if with_db:
        services["db"] = ServiceSpec(name="db", image="mariadb:11.4")
    return DesiredState(
        project="shop",
        services=services,
        networks={"backend": NetworkSpec(key="backend", name="shop_backend")},
        volumes={},
    )


def parse(
    text: str,
    environ: dict[str, str] | None = None,
    *,
    repository: Path | None = None,
    with_db: bool = True,
) -> BackupPolicy:
    return parse_backup_policy(
        textwrap.dedent(text),
        path=PATH,
        desired=desired(with_db=with_db),
        environ=ENV if environ is None else environ,
        default_target=DEFAULT_TARGET,
        repository=repository,
        folder=repository / "desired-state" if repository else None,
    )


def errors(text: str, environ: dict[str, str] | None = None, **kwargs: object) -> list[str]:
    with pytest.raises(InvalidDesiredState) as caught:
        parse(text, environ, **kwargs)  # type: ignore[arg-type]
    return [str(issue) for issue in caught.value.issues]


ENTRY = """
external_databases:
  - name: shopdb
    host: db.internal.example
    user: backup
    password_from: SHOP_DB_PASSWORD
    databases: [shop]
"""


def test_an_entry_with_its_defaults() -> None:
    (entry,) = parse(ENTRY).external_databases
    assert (entry.name, entry.host, entry.port, entry.user) == (
        "shopdb",
        "db.internal.example",
        3306,
        "backup",
    )
    assert entry.databases == ("shop",)
    assert entry.tls == "off"
    assert (entry.image, entry.network, entry.stop_services) == (None, None, ())
    # The password comes from the environment, and is never shown.
    assert entry.password == "correct-horse-battery"
    assert "correct-horse" not in repr(entry)


def test_every_key() -> None:
    policy = parse(
        """
        external_databases:
          - name: shopdb
            host: 10.0.0.5
            port: 3307
            user: backup
            password_from: SHOP_DB_PASSWORD
            databases: [shop, shop_logs]
            tls: required
            image: reconciler-local/mariadb:local
            network: backend
            stop_services: [web]
        """,
        with_db=False,
    )
    (entry,) = policy.external_databases
    assert entry.port == 3307
    assert entry.databases == ("shop", "shop_logs")
    assert (entry.tls, entry.image, entry.network) == (
        "required",
        "reconciler-local/mariadb:local",
        "backend",
    )
    assert entry.stop_services == ("web",)
    assert policy.external("shopdb") is entry
    assert policy.external("db") is None


def test_an_unknown_key_names_its_line() -> None:
    text = ENTRY + "    hostname: x\n"
    (error,) = errors(text)
    assert error.startswith(f"{PATH}:8: external_databases[0].hostname:")


def test_a_password_in_clear_is_refused_and_not_echoed() -> None:
    found = errors(ENTRY + "    password: hunter2-hunter2\n")
    assert len(found) == 1
    assert found[0].startswith(f"{PATH}:8: external_databases[0].password: never write")
    assert "password_from" in found[0]
    assert "hunter2" not in found[0]


def test_the_password_variable_must_be_set() -> None:
    (error,) = errors(ENTRY, environ={})
    assert error.startswith(f"{PATH}:6: external_databases[0].password_from:")
    assert "SHOP_DB_PASSWORD is not set" in error


def test_the_password_variable_is_a_name_not_a_value() -> None:
    (error,) = errors(ENTRY.replace("SHOP_DB_PASSWORD", "'s3cret pass'"))
    assert error.startswith(f"{PATH}:6: external_databases[0].password_from:")
    assert "not a variable name" in error


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("mysql://db.example:3306", "is a URL"),
        ("db.example/shop", "is a URL"),
        ("db example", "without spaces"),
        ("db.example:3306", "holds a port"),
        ("-db.example", "is not a host name"),
        ("db_1.example", "is not a host name"),
    ],
)
def test_host_must_be_a_host_name_or_an_ip(host: str, says: str) -> None:
    (error,) = errors(ENTRY.replace("db.internal.example", f"'{host}'"))
    assert error.startswith(f"{PATH}:4: external_databases[0].host:")
    assert says in error


@pytest.mark.parametrize("host", ["db", "db.internal.example", "10.0.0.5", "fd00::5", "a-1.b"])
def test_hosts_that_are_fine(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_range(port: int) -> None:
    (error,) = errors(ENTRY + f"    port: {port}\n")
    assert error.startswith(f"{PATH}:8: external_databases[0].port:")


def test_database_names_reach_no_command_line_option() -> None:
    (error,) = errors(ENTRY.replace("[shop]", "['--all-databases']"))
    assert error.startswith(f"{PATH}:7: external_databases[0].databases:")


def test_at_least_one_database() -> None:
    (error,) = errors(ENTRY.replace("[shop]", "[]"))
    assert error.startswith(f"{PATH}:7: external_databases[0].databases:")


def test_name_may_not_be_a_service() -> None:
    (error,) = errors(ENTRY.replace("name: shopdb", "name: db"))
    assert error.startswith(f"{PATH}:3: external_databases[0].name:")
    assert "already the name" in error


def test_the_helper_needs_an_image() -> None:
    (error,) = errors(ENTRY, with_db=False)
    assert error.startswith(f"{PATH}:3: external_databases[0]:")
    assert "image: mariadb:11.4" in error


def test_unknown_network_and_service() -> None:
    found = errors(ENTRY + "    network: backnd\n    stop_services: [webb]\n")
    assert found[0].startswith(f"{PATH}:8: external_databases[0].network:")
    assert "backend" in found[0]
    assert found[1].startswith(f"{PATH}:9: external_databases[0].stop_services[0]:")


def test_verify_needs_a_ca_file() -> None:
    (error,) = errors(ENTRY + "    tls: verify\n")
    assert error.startswith(f"{PATH}:8: external_databases[0].tls:")
    assert "ca_file:" in error


def test_a_ca_file_only_with_verify(tmp_path: Path) -> None:
    (error,) = errors(ENTRY + "    ca_file: ca.pem\n", repository=tmp_path)
    assert error.startswith(f"{PATH}:8: external_databases[0].ca_file:")


def test_tls_off_unquoted_is_off() -> None:
    (entry,) = parse(ENTRY + "    tls: off\n").external_databases
    assert entry.tls == "off"


def test_tls_values() -> None:
    (error,) = errors(ENTRY + "    tls: yes-please\n")
    assert error.startswith(f"{PATH}:8: external_databases[0].tls:")


def test_the_ca_file_is_read_from_the_repository(tmp_path: Path) -> None:
    (tmp_path / "desired-state" / "certs").mkdir(parents=True)
    (tmp_path / "desired-state" / "certs" / "db-ca.pem").write_text(CA)
    (tmp_path / "desired-state" / "backup.yaml").write_text(
        textwrap.dedent(ENTRY) + "    tls: verify\n    ca_file: certs/db-ca.pem\n"
    )
    policy = load_backup_policy(
        tmp_path,
        directory="desired-state",
        desired=desired(),
        environ=ENV,
        default_target=DEFAULT_TARGET,
    )
    assert policy is not None
    assert policy.external_databases[0].ca_pem == CA


@pytest.mark.parametrize(
    ("ca_file", "says"),
    [
        ("../../outside.pem", "leaves the repository"),
        ("/etc/ssl/ca.pem", "relative"),
        ("missing.pem", "does not exist"),
        ("link.pem", "leaves the repository"),
        ("notpem.pem", "no PEM certificate"),
    ],
)
def test_a_ca_file_outside_the_repository_or_not_pem(
    tmp_path: Path, ca_file: str, says: str
) -> None:
    repository = tmp_path / "repo"
    (repository / "desired-state").mkdir(parents=True)
    (tmp_path / "outside.pem").write_text(CA)
    (repository / "desired-state" / "link.pem").symlink_to(tmp_path / "outside.pem")
    (repository / "desired-state" / "notpem.pem").write_text("hello\n")
    (error,) = errors(ENTRY + f"    tls: verify\n    ca_file: '{ca_file}'\n", repository=repository)
    assert error.startswith(f"{PATH}:9: external_databases[0].ca_file:")
    assert says in error
