"""backup.yaml: the forms users write, and every error with its file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.errors import InvalidDesiredState
from reconciler.model.backup_policy import (
    BackupPolicy,
    is_mariadb_service,
    load_backup_policy,
    parse_backup_policy,
)
from reconciler.model.desired import DesiredState, Mount, ServiceSpec, VolumeSpec

DEFAULT_TARGET = "file:///var/lib/reconciler/backups"
PATH = "desired-state/backup.yaml"


def desired() -> DesiredState:
    return DesiredState(
        project="shop",
        services={
            "web": ServiceSpec(
                name="web",
                image="litespeedtech/openlitespeed:1.8",
                mounts=(Mount(type="volume", source="shop_site", target="/var/www"),),
            ),
            "db": ServiceSpec(
                name="db",
                image="mariadb:11.4",
                environment={"MARIADB_ROOT_PASSWORD": "x"},
            ),
            "cache": ServiceSpec(name="cache", image="redis:7"),
        },
        networks={},
        volumes={
            "site": VolumeSpec(key="site", name="shop_site"),
            "dbdata": VolumeSpec(key="dbdata", name="shop_dbdata"),
        },
    )


def parse(text: str, environ: dict[str, str] | None = None) -> BackupPolicy:
    return parse_backup_policy(
        textwrap.dedent(text),
        path=PATH,
        desired=desired(),
        environ=environ or {},
        default_target=DEFAULT_TARGET,
    )


def errors(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(InvalidDesiredState) as caught:
        parse(text, environ)
    return [str(issue) for issue in caught.value.issues]


def test_the_form_of_the_issue() -> None:
    policy = parse(
        """
        target: s3://my-bucket/prod
        schedule: {every: day, at: "05:04", timezone: Europe/Bucharest}
        volumes: [site]
        databases: [{service: db}]
        retention: {daily: 7, weekly: 4, monthly: 12}
        """
    )
    assert policy.target == "s3://my-bucket/prod"
    assert policy.schedule.at == "05:04"
    assert policy.schedule.timezone == "Europe/Bucharest"
    assert [(v.name, v.stop_services) for v in policy.volumes] == [("site", False)]
    assert [d.service for d in policy.databases] == ["db"]
    assert (policy.retention.daily, policy.retention.weekly, policy.retention.monthly) == (7, 4, 12)


def test_defaults_and_long_forms() -> None:
    policy = parse(
        """
        volumes:
          - name: site
            stop_services: true
          - dbdata
        databases: [db]
        """
    )
    assert policy.target == DEFAULT_TARGET
    assert policy.schedule.at == "05:04"
    assert policy.schedule.timezone == "UTC"
    assert [(v.name, v.stop_services) for v in policy.volumes] == [
        ("site", True),
        ("dbdata", False),
    ]
    assert policy.retention.daily == 7


def test_variables_are_filled_from_the_environment() -> None:
    policy = parse("target: s3://${BUCKET}/${ENV:-prod}\n", {"BUCKET": "shop-backups"})
    assert policy.target == "s3://shop-backups/prod"


def test_an_unset_variable_names_its_line() -> None:
    assert errors("volumes: [site]\ntarget: s3://${BUCKET}/prod\n")[0].startswith(
        f"{PATH}:2: target: variable BUCKET is not set"
    )


def test_unknown_keys_name_file_line_and_suggest() -> None:
    assert errors(
        """
        target: s3://my-bucket/prod
        volumes: [site]
        retention: {daily: 7, weekley: 4}
        schedul: {at: "05:04"}
        """
    ) == [
        f"{PATH}:4: retention.weekley: unknown key (did you mean 'weekly'?)",
        f"{PATH}:5: schedul: unknown key (did you mean 'schedule'?)",
    ]


def test_unknown_volume_and_service_at_their_lines() -> None:
    assert errors(
        """
        volumes:
          - site
          - sitee
        databases:
          - service: dbb
          - service: nosuch
        """
    ) == [
        f"{PATH}:4: volumes[1]: unknown volume 'sitee' (did you mean 'site'?)",
        f"{PATH}:6: databases[0].service: unknown service 'dbb' (did you mean 'db'?)",
        f"{PATH}:7: databases[1].service: unknown service 'nosuch': "
        "desired-state/compose.yaml declares cache, db, web",
    ]


def test_a_database_must_be_a_mariadb_service() -> None:
    (message,) = errors("databases: [{service: cache}]\n")
    assert message.startswith(f"{PATH}:1: databases[0].service: service 'cache' (image redis:7)")
    assert "is not a MariaDB service" in message


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ('{at: "5:04"}', "schedule.at: '5:04' is not a time of day"),
        ('{at: "24:00"}', "schedule.at: '24:00' is not a time of day"),
        ("{timezone: Mars/Olympus}", "schedule.timezone: unknown time zone 'Mars/Olympus'"),
        ("{every: week}", "schedule.every: Input should be 'day'"),
    ],
)
def test_bad_time_and_zone(schedule: str, expected: str) -> None:
    (message,) = errors(f"volumes: [site]\nschedule: {schedule}\n")
    assert message.startswith(f"{PATH}:2: {expected}")


@pytest.mark.parametrize(
    "target",
    ["s3://", "s3://UPPER/prefix", "ftp://host/x", "file://relative/path", "/var/backups"],
)
def test_bad_target(target: str) -> None:
    (message,) = errors(f"volumes: [site]\ntarget: {target}\n")
    assert message.startswith(f"{PATH}:2: target: '{target}'")


def test_negative_retention_and_duplicates() -> None:
    assert errors("volumes: [site, site]\nretention: {daily: -1}\n") == [
        f"{PATH}:2: retention.daily: Input should be greater than or equal to 0",
    ]
    assert errors("volumes: [site, site]\n") == [
        f"{PATH}:1: volumes[1]: volume 'site' is listed twice"
    ]


def test_yaml_errors_and_wrong_shapes() -> None:
    assert errors("volumes: [site\n")[0].startswith(f"{PATH}:2: invalid YAML")
    assert errors("- site\n") == [f"{PATH}:1: must be a mapping of keys to values"]


def test_the_file_is_optional(tmp_path: Path) -> None:
    (tmp_path / "desired-state").mkdir()
    load = lambda: load_backup_policy(  # noqa: E731
        tmp_path,
        directory="desired-state",
        desired=desired(),
        environ={},
        default_target=DEFAULT_TARGET,
    )
    assert load() is None
    (tmp_path / "desired-state" / "backup.yaml").write_text("volumes: [site]\n")
    policy = load()
    assert policy is not None
    assert policy.volumes[0].name == "site"


@pytest.mark.parametrize(
    ("image", "environment", "expected"),
    [
        ("mariadb:11", {}, True),
        ("docker.io/library/mariadb@sha256:abc", {}, True),
        ("reconciler-local/mariadb:local", {}, True),
        ("bitnami/mysql:8", {}, True),
        ("registry.example.com:5000/db-image:1", {"MARIADB_ROOT_PASSWORD": "x"}, True),
        ("registry.example.com:5000/mariadb-proxy-not:1", {}, True),
        ("postgres:16", {"POSTGRES_PASSWORD": "x"}, False),
    ],
)
def test_what_counts_as_mariadb(image: str, environment: dict[str, str], expected: bool) -> None:
    assert (
        is_mariadb_service(ServiceSpec(name="x", image=image, environment=environment)) is expected
    )
