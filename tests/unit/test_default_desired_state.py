"""The default stack in desired-state/ validates with the real loaders.

It is what a new user deploys first, so CI checks it as the reconciler would
on a VM: compose.yaml and backup.yaml filled from example.env (the documented
variables, no real secret), and the promises the docs make about it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from reconciler.errors import InvalidDesiredState
from reconciler.model.backup_policy import load_backup_policy
from reconciler.model.compose_runtime import parse_byte_size
from reconciler.model.desired import DesiredState
from reconciler.model.loading import load_desired_state
from reconciler.model.restore_requests import load_restore_requests, parse_restore_requests

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "desired-state"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def example_env() -> dict[str, str]:
    values = dotenv_values(FOLDER / "example.env", interpolate=False)
    return {key: value for key, value in values.items() if value is not None}


def load(environ: dict[str, str]) -> DesiredState:
    return load_desired_state(ROOT, directory="desired-state", environ=environ)


def test_compose_validates_with_the_example_env() -> None:
    desired = load(example_env())

    assert desired.project == "site"
    assert list(desired.services) == ["webserver", "db", "reconciler"]
    assert set(desired.volumes) == {"uploads", "tls", "db"}


def test_backup_policy_validates_at_0504_every_day() -> None:
    environ = example_env()
    desired = load(environ)

    policy = load_backup_policy(
        ROOT,
        directory="desired-state",
        desired=desired,
        environ=environ,
        default_target="file:///var/lib/reconciler/backups",
    )

    assert policy is not None
    assert (policy.schedule.every, policy.schedule.at) == ("day", "05:04")
    assert policy.target == environ["BACKUP_TARGET"]
    # Data only: the code is in git and in the image; the certificate stays on its machine.
    assert [v.name for v in policy.volumes] == ["uploads"]
    assert [d.service for d in policy.databases] == ["db"]


def test_restore_yaml_requests_nothing() -> None:
    environ = example_env()
    desired = load(environ)

    requests = load_restore_requests(
        ROOT, directory="desired-state", desired=desired, environ=environ
    )

    assert requests == ()


def test_the_example_request_in_restore_yaml_validates() -> None:
    environ = example_env()
    lines = (FOLDER / "restore.yaml").read_text(encoding="utf-8").splitlines()
    example = "\n".join(
        line.removeprefix("# ")
        for line in lines
        if line.startswith("#   ") or line == "# restores:"
    )

    requests = parse_restore_requests(
        example, path="desired-state/restore.yaml", desired=load(environ), environ=environ
    )

    assert [r.id for r in requests] == ["2026-11-27-shop-rollback"]


def test_every_variable_is_documented_in_example_env() -> None:
    documented = set(example_env()) | {
        # Documented there as a commented-out line: only set on a developer's PC.
        "RECONCILER_LOCAL_REPO",
    }
    used: set[str] = set()
    for name in ("compose.yaml", "backup.yaml"):
        for line in (FOLDER / name).read_text(encoding="utf-8").splitlines():
            if not line.lstrip().startswith("#"):
                used |= set(_VARIABLE.findall(line))

    assert used - documented == set()


@pytest.mark.parametrize(
    "missing", ["MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD"], ids=lambda name: name
)
def test_a_missing_secret_refuses_the_commit_naming_the_env_file(missing: str) -> None:
    environ = example_env()
    del environ[missing]

    with pytest.raises(InvalidDesiredState) as caught:
        load(environ)

    messages = [str(issue) for issue in caught.value.issues]
    assert messages, "a missing secret must be an error"
    assert all(missing in m and "/etc/reconciler/reconciler.env" in m for m in messages)
    assert all(m.startswith("desired-state/compose.yaml:") for m in messages)


def test_secrets_are_variables_not_values_in_git() -> None:
    compose = yaml.safe_load((FOLDER / "compose.yaml").read_text(encoding="utf-8"))

    for service in compose["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{key} must come from the env file"


def test_phpmyadmin_is_off_by_default_and_on_loopback_when_enabled() -> None:
    environ = example_env() | {"COMPOSE_PROFILES": "admin"}

    admin = load(environ).services["phpmyadmin"]

    assert [(p.host_ip, p.published, p.target) for p in admin.ports] == [("127.0.0.1", 8081, 80)]


def test_the_reconciler_manages_itself_with_the_socket_and_same_path_state() -> None:
    environ = example_env() | {"RECONCILER_STATE_DIR": "/srv/state", "RECONCILER_IMAGE": "r:1"}

    service = load(environ).services["reconciler"]

    mounts = {m.target: m.source for m in service.mounts}
    assert service.image == "r:1"
    assert mounts["/var/run/docker.sock"] == "/var/run/docker.sock"
    assert mounts["/srv/state"] == "/srv/state"
    assert mounts["/etc/reconciler"] == "/etc/reconciler"
    assert service.restart == "unless-stopped"
    assert service.healthcheck is not None
    assert service.healthcheck.test == ("CMD", "reconciler", "healthcheck")


def test_the_reconcilers_metrics_are_published_on_the_vms_loopback_only() -> None:
    service = load(example_env() | {"RECONCILER_METRICS_PORT": "9400"}).services["reconciler"]

    # Inside the container the daemon listens on every address of the
    # container; the VM side of the published port is 127.0.0.1 alone.
    assert service.environment["RECONCILER_METRICS_ADDR"] == "0.0.0.0:9365"
    assert [(p.host_ip, p.published, p.target) for p in service.ports] == [
        ("127.0.0.1", 9400, 9365)
    ]


def test_a_local_checkout_is_mounted_at_its_own_path_on_a_developers_pc() -> None:
    environ = example_env() | {"RECONCILER_LOCAL_REPO": "/home/dev/site"}

    service = load(environ).services["reconciler"]

    assert ("/home/dev/site", "/home/dev/site") in {(m.source, m.target) for m in service.mounts}


def test_webserver_builds_the_site_into_its_image_and_serves_it_on_80_and_443() -> None:
    service = load(example_env()).services["webserver"]

    assert service.build is not None
    assert Path(service.build.context) == ROOT / "site"
    assert (Path(service.build.context) / service.build.dockerfile).resolve() == (
        ROOT / "images/webserver/Dockerfile"
    )
    assert service.build.args["BASE"] == "litespeedtech/openlitespeed:1.8.3-lsphp83"
    assert {(p.published, p.target) for p in service.ports} == {(80, 80), (443, 443)}
    # Volumes hold what the site writes and its certificate, never the docroot.
    assert {(m.source, m.target) for m in service.mounts} == {
        ("site_uploads", "/var/www/vhosts/localhost/uploads"),
        ("site_tls", "/var/www/vhosts/localhost/certs"),
    }


def test_a_change_to_the_site_or_to_its_recipe_rebuilds_the_webserver(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for folder in ("desired-state", "site", "images/webserver"):
        shutil.copytree(ROOT / folder, copy / folder)

    def context_hash() -> str:
        desired = load_desired_state(copy, directory="desired-state", environ=example_env())
        build = desired.services["webserver"].build
        assert build is not None
        return build.context_hash

    first = context_hash()
    index = copy / "site/index.php"
    index.write_text(index.read_text(encoding="utf-8").replace("Welcome", "Hello"))
    after_site = context_hash()
    recipe = copy / "images/webserver/Dockerfile"
    recipe.write_text(recipe.read_text(encoding="utf-8") + "# changed\n")

    assert len({first, after_site, context_hash()}) == 3


def test_every_service_keeps_bounded_logs() -> None:
    # Docker's json-file logs grow without bound by default: a year of them
    # must not fill the VM's disk. Every service, phpMyAdmin's profile too.
    desired = load({**example_env(), "COMPOSE_PROFILES": "*"})

    assert set(desired.services) == {"webserver", "db", "phpmyadmin", "reconciler"}
    for name, service in desired.services.items():
        logging = service.logging
        assert logging is not None, f"{name} has no logging: its logs grow without bound"
        assert logging.driver in {"json-file", "local"}, name
        size = parse_byte_size(logging.options.get("max-size", "0"))
        assert 0 < size <= 100 * 1024**2, f"{name}: max-size {size} bytes"
        assert 1 <= int(logging.options.get("max-file", "1")) <= 10, name
