"""restore.yaml: the form users write, and every error with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import InvalidDesiredState
from reconciler.model.desired import Dependency, DesiredState, Mount, ServiceSpec, VolumeSpec
from reconciler.model.restore_requests import (
    RestoreRequest,
    load_restore_requests,
    parse_restore_requests,
)

PATH = "desired-state/restore.yaml"


def desired() -> DesiredState:
    return DesiredState(
        project="shop",
        services={
            "web": ServiceSpec(
                name="web",
                image="reconciler-local/busybox:latest",
                mounts=(Mount(type="volume", source="shop_site", target="/site"),),
                depends_on=(Dependency(service="db"),),
            ),
            "db": ServiceSpec(
                name="db",
                image="mariadb:11.4",
                mounts=(Mount(type="volume", source="shop_dbdata", target="/var/lib/mysql"),),
            ),
            "cache": ServiceSpec(name="cache", image="redis:7"),
        },
        networks={},
        volumes={
            "site": VolumeSpec(key="site", name="shop_site"),
            "dbdata": VolumeSpec(key="dbdata", name="shop_dbdata"),
        },
    )


def parse(text: str, environ: dict[str, str] | None = None) -> tuple[RestoreRequest, ...]:
    return parse_restore_requests(text, path=PATH, desired=desired(), environ=environ or {})


def issues(text: str) -> list[str]:
    with pytest.raises(InvalidDesiredState) as caught:
        parse(text)
    return [str(issue) for issue in caught.value.issues]


def test_the_documented_form() -> None:
    requests = parse_restore_requests(
        """\
restores:
  - id: 2026-11-27-shop-rollback
    backup: latest
    source: s3://my-bucket/dev/
    volumes: [site]
    databases: [db]
  - id: second
    backup: 2026-11-27T05-04-00Z
    source: ${DEV_SOURCE}
""",
        path=PATH,
        desired=desired(),
        environ={"DEV_SOURCE": "file:///var/backups/dev"},
    )
    assert [r.id for r in requests] == ["2026-11-27-shop-rollback", "second"]
    first, second = requests
    assert first.source == "s3://my-bucket/dev"
    assert first.volumes == ("site",)
    assert first.databases == ("db",)
    assert second.backup == "2026-11-27T05-04-00Z"
    assert second.source == "file:///var/backups/dev"
    assert second.volumes is None
    assert second.databases is None


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "restores: []\n", "restores:\n"])
def test_no_requests(text: str) -> None:
    assert parse(text) == ()


def test_absent_file_is_no_requests(tmp_path: Path) -> None:
    assert load_restore_requests(tmp_path, directory="ds", desired=desired(), environ={}) == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "restores:\n  - id: a\n  - id: b\n  - id: a\n",
            [
                f"{PATH}:4: restores[2].id: duplicate id 'a' (first at line 2): "
                "every request needs an id of its own"
            ],
        ),
        (
            "restores:\n  - id: a\n    volumes: [sitee]\n",
            [f"{PATH}:3: restores[0].volumes[0]: unknown volume 'sitee' (did you mean 'site'?)"],
        ),
        (
            "restores:\n  - id: a\n    databases:\n      - nope\n",
            [
                f"{PATH}:4: restores[0].databases[0]: unknown database service 'nope': "
                "desired-state/compose.yaml declares cache, db, web"
            ],
        ),
        (
            "restores:\n  - id: a\n    databases: [cache]\n",
            [
                f"{PATH}:3: restores[0].databases[0]: service 'cache' (image redis:7) is not a "
                "MariaDB service: only MariaDB dumps can be loaded; restore its volume instead"
            ],
        ),
        (
            "restores:\n  - id: a\n    source: ftp://host/x\n",
            [
                f"{PATH}:3: restores[0].source: 'ftp://host/x' is not a backup source: "
                "use s3://BUCKET/PREFIX or file:///PATH"
            ],
        ),
        (
            "restores:\n  - id: a\n    source: s3://A_Bucket/x\n",
            [
                f"{PATH}:3: restores[0].source: 's3://A_Bucket/x' has no valid bucket name: "
                "write s3://BUCKET/PREFIX (bucket: 3-63 lower-case letters, digits, dots or dashes)"
            ],
        ),
        (
            "restores:\n  - id: a\n    backup: yesterday\n",
            [
                f"{PATH}:3: restores[0].backup: 'yesterday' is neither 'latest' nor a backup id "
                "like 2026-11-27T05-04-00Z (see `reconciler backup list`)"
            ],
        ),
        (
            "restores:\n  - id: a\n    volume: [site]\n",
            [f"{PATH}:3: restores[0].volume: unknown key (did you mean 'volumes'?)"],
        ),
        (
            "restores:\n  - backup: latest\n",
            [f"{PATH}:2: restores[0].id: required key is missing"],
        ),
        (
            "restores:\n  - id: ../../etc\n",
            [
                f"{PATH}:2: restores[0].id: '../../etc' is not a usable id: 1-100 letters, "
                "digits, '.', '_' or '-', starting with a letter or digit "
                "(e.g. 2026-11-27-shop-rollback)"
            ],
        ),
        (
            "restores:\n  - id: a\n  - id: a\n    backup: latest\n    backup: latest\n",
            [f"{PATH}:5: restores[1].backup: duplicate key (first at line 4)"],
        ),
        ("- id: a\n", [f"{PATH}:1: must be a mapping with a 'restores' list"]),
        (
            "restores:\n  - id: a\n    source: ${UNSET_SOURCE}\n",
            None,  # the message is interpolation's; only the location is checked
        ),
    ],
)
def test_errors_name_file_line_and_key(text: str, expected: list[str] | None) -> None:
    found = issues(text)
    if expected is None:
        assert found
        assert found[0].startswith(f"{PATH}:3: restores[0].source:")
    else:
        assert found == expected


def test_invalid_yaml_has_a_line() -> None:
    found = issues("restores:\n  - id: a\n   bad: [\n")
    assert len(found) == 1
    assert found[0].startswith(f"{PATH}:")
    assert "invalid YAML" in found[0]


def test_one_bad_request_does_not_hide_the_problems_of_others() -> None:
    found = issues(
        "restores:\n  - id: a\n    volumes: [sitee]\n  - id: a\n    source: ftp://x/y\n"
        "  - backup: latest\n  - backup: latest\nextra: 1\n"
    )
    assert [f.split(": ")[0] + ": " + f.split(": ")[1] for f in found] == [
        f"{PATH}:3: restores[0].volumes[0]",
        f"{PATH}:4: restores[1].id",
        f"{PATH}:5: restores[1].source",
        f"{PATH}:6: restores[2].id",
        f"{PATH}:7: restores[3].id",
        f"{PATH}:8: extra",
    ]


def test_top_level_keys_that_are_not_strings() -> None:
    # Found by tests/fuzz: ``0:`` next to ``name:`` made sorting the unknown keys raise TypeError.
    assert issues("name: null\n0: null\n") == [
        f"{PATH}:1: name: unknown key (supported: restores)",
        f"{PATH}:2: 0: unknown key (supported: restores)",
    ]


def test_paths_of_one_volume() -> None:
    (request,) = parse(
        "restores:\n  - id: a\n    volumes: [site]\n"
        "    paths: [./uploads/2026/, html/index.php, uploads/2026]\n"
    )
    assert request.paths == ("uploads/2026", "html/index.php")  # normalised, once each


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ("[/etc/passwd]", "a path inside the volume is relative"),
        ("[uploads/../../x]", "'..' and NUL are not allowed"),
        ("['.']", "for the whole volume, leave 'paths' out"),
        ("[]", "name at least one file or folder"),
    ],
)
def test_a_path_that_could_leave_the_volume_is_refused(paths: str, message: str) -> None:
    (found,) = issues(f"restores:\n  - id: a\n    volumes: [site]\n    paths: {paths}\n")
    assert found.startswith(f"{PATH}:4: restores[0].paths")
    assert message in found


@pytest.mark.parametrize("volumes", ["", "    volumes: [site, dbdata]\n"])
def test_paths_need_exactly_one_volume(volumes: str) -> None:
    (found,) = issues(f"restores:\n  - id: a\n{volumes}    paths: [uploads]\n")
    assert "paths are files or folders of one volume: name that volume alone" in found


def test_databases_may_name_an_external_database_of_backup_yaml() -> None:
    text = "restores:\n  - id: r1\n    databases: [shopdb, db]\n"
    (request,) = parse_restore_requests(
        text, path=PATH, desired=desired(), environ={}, external_databases=["shopdb"]
    )
    assert request.databases == ("shopdb", "db")
    # Unknown without backup.yaml's entry, and the entry's name is offered.
    (issue,) = issues(text)
    assert issue.startswith(f"{PATH}:3: restores[0].databases[0]: unknown database service")
    with pytest.raises(InvalidDesiredState) as caught:
        parse_restore_requests(
            text.replace("shopdb", "shopbd"),
            path=PATH,
            desired=desired(),
            environ={},
            external_databases=["shopdb"],
        )
    assert "did you mean 'shopdb'?" in str(caught.value.issues[0])
