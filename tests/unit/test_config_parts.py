"""The parts label (decide/hashing.py ``config_parts``): what a recreate names as changed.

The planner compares the parts of the desired spec with those stored on the
container; these tests pin what the parts are, that they hide values, and
that the loader names the repository files a service reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from reconciler.decide.hashing import (
    changed_parts,
    config_hash,
    config_parts,
    decode_parts,
    encode_parts,
)
from reconciler.model.desired import ServiceSpec
from reconciler.model.loading import load_desired_state
from reconciler.redaction import forget_secrets, set_fingerprint_key


@pytest.fixture(autouse=True)
def _forget() -> Any:
    forget_secrets()
    yield
    forget_secrets()


def _web(**fields: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"name": "web", "image": "w", **fields})


def test_parts_are_per_key_and_per_environment_entry_and_leave_defaults_out() -> None:
    parts = config_parts(
        _web(command=["serve"], environment={"A": "1", "B": "2"}, labels={"team": "x"})
    )
    assert sorted(parts) == ["command", "environment.A", "environment.B", "image", "labels.team"]
    assert all(len(digest) == 12 for digest in parts.values())


def test_changed_parts_names_changed_added_and_removed_keys_then_files() -> None:
    before = config_parts(
        _web(environment={"A": "1", "GONE": "x"}, sources={"desired-state/web.env": "h1"})
    )
    after = config_parts(
        _web(
            image="w2", environment={"A": "2", "NEW": "y"}, sources={"desired-state/web.env": "h2"}
        )
    )
    assert changed_parts(after, before) == [
        "environment.A",
        "environment.GONE",
        "environment.NEW",
        "image",
        "file:desired-state/web.env",
    ]
    assert changed_parts(before, before) == []


def test_the_label_round_trips_and_a_broken_one_reads_as_absent() -> None:
    parts = config_parts(_web(environment={"A": "1"}))
    assert decode_parts(encode_parts(parts)) == parts
    for broken in (None, "", "not json", "[1]", '{"a": 1}'):
        assert decode_parts(broken) is None


def test_a_secret_part_is_keyed_so_a_guess_cannot_be_checked() -> None:
    secret = "correct-horse-battery"
    set_fingerprint_key(b"vm-one")
    keyed = config_parts(
        _web(environment={"API_TOKEN": secret}, secret_values=frozenset({secret}))
    )["environment.API_TOKEN"]
    # Not what anyone could compute from the value and the code...
    unkeyed = config_parts(_web(environment={"API_TOKEN": secret}))["environment.API_TOKEN"]
    assert keyed != unkeyed
    assert hashlib.sha256(secret.encode()).hexdigest()[:12] != keyed
    assert secret not in encode_parts(config_parts(_web(environment={"API_TOKEN": secret})))
    # ...yet a new secret is still a changed part.
    other = "another-long-secret"
    assert (
        config_parts(_web(environment={"API_TOKEN": other}, secret_values=frozenset({other})))[
            "environment.API_TOKEN"
        ]
        != keyed
    )


def test_sources_never_change_the_config_hash() -> None:
    # Upgrading must not recreate running services: the hash is what it was.
    assert config_hash(_web(sources={"desired-state/web.env": "h"})) == config_hash(_web())


def test_the_loader_names_the_repository_files_a_service_reads(tmp_path: Path) -> None:
    files = {
        "desired-state/compose.yaml": (
            "name: shop\n"
            "services:\n"
            "  web:\n"
            "    build: {context: ../site, dockerfile: ../images/web/Dockerfile}\n"
            "    env_file: web.env\n"
            "    volumes: ['./conf/hello.txt:/srv/hello.txt:ro', '/etc/localtime:/etc/localtime']\n"
        ),
        "desired-state/web.env": "GREETING=hello\n",
        "desired-state/conf/hello.txt": "hello\n",
        "site/index.php": "<?php echo 1;\n",
        "images/web/Dockerfile": "FROM scratch\n",
    }
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)

    def parts() -> dict[str, str]:
        return config_parts(load_desired_state(tmp_path, environ={}).services["web"])

    first = parts()
    assert {n for n in first if n.startswith("file:")} == {
        "file:desired-state/web.env",
        "file:desired-state/conf/hello.txt",
        "file:site",
        "file:images/web/Dockerfile",
    }
    (tmp_path / "desired-state/conf/hello.txt").write_text("bonjour\n")
    assert changed_parts(parts(), first) == ["file:desired-state/conf/hello.txt"]
    second = parts()
    (tmp_path / "site/index.php").write_text("<?php echo 2;\n")
    # A new context is a new image tag, named once: as the folder.
    assert changed_parts(parts(), second) == ["file:site"]
    third = parts()
    (tmp_path / "desired-state/web.env").write_text("GREETING=hi\n")
    assert changed_parts(parts(), third) == ["environment.GREETING", "file:desired-state/web.env"]


def test_parts_are_named_as_compose_yaml_names_them() -> None:
    parts = config_parts(
        _web(
            mounts=[{"type": "volume", "source": "shop_data", "target": "/data"}],
            stop_grace_period_s=1.0,
        )
    )
    assert {"volumes", "stop_grace_period"} <= set(parts)
    assert not {"mounts", "stop_grace_period_s"} & set(parts)


def test_a_bumped_hash_version_recreates_with_the_hashes_as_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reconciler import labels
    from reconciler.decide import hashing
    from reconciler.decide.actions import RecreateService
    from reconciler.decide.planning import plan
    from reconciler.model.desired import DesiredState
    from reconciler.model.observed import Observed, ObservedContainer

    web = _web(environment={"A": "1"})
    made = ObservedContainer(
        id="c" * 64,
        name="shop-web-1",
        labels={
            labels.PROJECT: "shop",
            labels.SERVICE: "web",
            labels.CONFIG_HASH: config_hash(web),
            labels.CONFIG_PARTS: encode_parts(config_parts(web)),
        },
    )
    monkeypatch.setattr(hashing, "HASH_VERSION", "2")
    desired = DesiredState(project="shop", services={"web": web}, networks={}, volumes={})
    (action,) = plan(desired, Observed(containers=(made,))).actions
    assert isinstance(action, RecreateService)
    assert action.reason.startswith("configuration changed (")


def test_anonymous_volumes_are_part_of_volumes_and_change_the_hash() -> None:
    named = _web(mounts=[{"type": "volume", "source": "shop_data", "target": "/data"}])
    both = _web(
        mounts=[{"type": "volume", "source": "shop_data", "target": "/data"}],
        anonymous_volumes=[{"target": "/app/node_modules"}],
    )
    alone = _web(anonymous_volumes=[{"target": "/app/node_modules"}])

    assert config_hash(both) != config_hash(named)
    assert changed_parts(config_parts(both), config_parts(named)) == ["volumes"]
    assert changed_parts(config_parts(alone), config_parts(_web())) == ["volumes"]
    assert "anonymous_volumes" not in config_parts(both)
    # A service without anonymous volumes hashes as before they were known.
    assert config_hash(named) == config_hash(_web(mounts=named.mounts, anonymous_volumes=()))


def test_mount_points_docker_makes_in_a_bind_mounted_folder_change_nothing(
    tmp_path: Path,
) -> None:
    # ./app is bind-mounted and also the build context; Docker makes app/node_modules
    # and app/cache (the mount points of the volumes inside it) when the container starts.
    files = {
        "desired-state/compose.yaml": (
            "name: shop\n"
            "services:\n"
            "  web:\n"
            "    build: ./app\n"
            "    volumes: [./app:/app, /app/node_modules, 'cache:/app/cache/', ./app:/srv]\n"
            "volumes: {cache: }\n"
        ),
        "desired-state/app/Dockerfile": "FROM scratch\n",
    }
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)

    def web() -> ServiceSpec:
        return load_desired_state(tmp_path, environ={}).services["web"]

    before = web()
    (tmp_path / "desired-state/app/node_modules").mkdir()
    (tmp_path / "desired-state/app/cache").mkdir()
    assert config_hash(web()) == config_hash(before)
    assert web().image == before.image  # the build context's hash too
    # Anything else in the folder is seen by the container, and changes the hash.
    (tmp_path / "desired-state/app/other").mkdir()
    assert config_hash(web()) != config_hash(before)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("expose", ["3000/tcp"]),
        ("stop_signal", "SIGQUIT"),
        ("cap_add", ["NET_ADMIN"]),
        ("cap_drop", ["ALL"]),
        ("init", True),
        ("tmpfs", ["/run"]),
        ("shm_size", 67108864),
        ("extra_hosts", ["db:10.0.0.5"]),
        ("read_only", True),
        ("security_opt", ["no-new-privileges:true"]),
        ("ulimits", [{"name": "nofile", "soft": 1, "hard": 2}]),
        ("sysctls", {"net.core.somaxconn": "1024"}),
        ("logging", {"driver": "json-file", "options": {"max-size": "10m"}}),
        ("mem_limit", 536870912),
        ("mem_reservation", 134217728),
        ("cpus", 0.5),
        ("pids_limit", 100),
        ("stdin_open", True),
        ("tty", True),
        ("network_mode", "host"),
        ("container_name", "front"),
    ],
)
def test_each_runtime_key_changes_the_hash_and_is_a_part_under_its_compose_name(
    key: str, value: Any
) -> None:
    plain, using = _web(), _web(**{key: value})
    assert config_hash(using) != config_hash(plain)
    assert changed_parts(config_parts(using), config_parts(plain)) == [key]
