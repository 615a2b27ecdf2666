"""Compose's ``secrets:`` and ``configs:``: their content in the config hash, the
plan's part names, encrypted files as sources, and the tar put into a container.

The loading rules at their lines are table cases
(tests/unit/cases/compose_{valid,invalid}/*secrets_and_configs.yaml).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.docker_engine import grant_archive
from reconciler.decide import hashing
from reconciler.decide.hashing import changed_parts, config_hash, config_parts
from reconciler.errors import InvalidDesiredState
from reconciler.model.desired import DesiredState
from reconciler.model.loading import load_desired_state
from reconciler.model.secrets import read_secrets
from reconciler.redaction import forget_secrets
from reconciler.secret_keys import keygen, load_keyring, recipient_of
from tests.fixtures.sops_encoder import sops_dotenv, sops_yaml

COMPOSE = """\
name: shop
services:
  web:
    image: nginx
    secrets: [db-password]
    configs: [site]
  db:
    image: mariadb
    secrets:
      - source: db-password
        target: db_root_password
  other:
    image: busybox
    configs:
      - source: site
        target: /etc/site.conf
secrets:
  db-password:
    file: ./db-password.txt
configs:
  site:
    file: ./site.conf
"""


@pytest.fixture(autouse=True)
def _forget() -> Any:
    forget_secrets()
    yield
    forget_secrets()


def _repo(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def _load(root: Path, *, key: Path | None = None, environ: dict[str, str] | None = None) -> Any:
    secrets = None
    if key is not None:
        secrets = read_secrets(root, directory="desired-state", keyring=load_keyring(key))
    return load_desired_state(root, project=None, environ=environ or {}, secrets=secrets)


def _hashes(state: DesiredState) -> dict[str, str]:
    return {name: config_hash(spec) for name, spec in state.services.items()}


def test_a_changed_secret_file_changes_the_hash_of_exactly_the_services_granted_it(
    tmp_path: Path,
) -> None:
    root = _repo(
        tmp_path,
        {
            "desired-state/compose.yaml": COMPOSE,
            "desired-state/db-password.txt": "first-password",
            "desired-state/site.conf": "listen 80\n",
        },
    )
    first = _load(root)
    (root / "desired-state/db-password.txt").write_text("second-password")
    second = _load(root)
    before, after = _hashes(first), _hashes(second)
    assert before["web"] != after["web"]
    assert before["db"] != after["db"]
    assert before["other"] == after["other"]
    # The plan names the secret, never its value nor its file.
    web_before = config_parts(first.services["web"])
    web_after = config_parts(second.services["web"])
    assert changed_parts(web_after, web_before) == ["secrets.db-password"]

    (root / "desired-state/site.conf").write_text("listen 8080\n")
    third = _load(root)
    assert _hashes(third)["db"] == after["db"]
    assert changed_parts(
        config_parts(third.services["other"]), config_parts(second.services["other"])
    ) == ["configs.site"]


def test_a_service_without_secrets_or_configs_hashes_as_before(tmp_path: Path) -> None:
    # The hash rule: new fields at their default leave the hash as it was.
    root = _repo(
        tmp_path,
        {"desired-state/compose.yaml": "name: shop\nservices:\n  web:\n    image: nginx\n"},
    )
    spec = _load(root).services["web"]
    assert "secrets" not in config_parts(spec)
    assert "configs" not in config_parts(spec)
    bare = spec.model_copy(update={"secrets": (), "configs": ()})
    assert config_hash(bare) == config_hash(spec)


def test_a_secret_content_digest_is_keyed_and_never_plain_on_the_label(tmp_path: Path) -> None:
    root = _repo(
        tmp_path,
        {
            "desired-state/compose.yaml": COMPOSE,
            "desired-state/db-password.txt": "short",
            "desired-state/site.conf": "listen 80\n",
        },
    )
    spec = _load(root).services["web"]
    plain = hashlib.sha256(b"short").hexdigest()
    assert spec.secrets[0].content_hash == plain  # the loader's digest, never dumped as is
    normalised = hashing._normalised(spec)  # what the hash and the parts are made of
    assert plain not in str(normalised)
    assert normalised["configs"][0]["content_hash"] == spec.configs[0].content_hash
    assert "short" not in repr(spec)


def test_an_encrypted_file_and_an_encrypted_variable_are_secret_sources(tmp_path: Path) -> None:
    key = tmp_path / "vm" / "age.key"
    keygen(key)
    to = recipient_of(key)[0]
    compose = """\
name: shop
services:
  web:
    image: nginx
    secrets: [app-env, token]
    configs: [settings]
secrets:
  app-env:
    file: ./app.sops.env
  token:
    environment: API_TOKEN
configs:
  settings:
    file: ./conf/settings.sops.yaml
"""
    root = _repo(
        tmp_path / "repo",
        {
            "desired-state/compose.yaml": compose,
            "desired-state/app.sops.env": sops_dotenv({"DB_PASSWORD": 'pa ss"word'}, to),
            "desired-state/tokens.sops.env": sops_dotenv({"API_TOKEN": "token-from-git"}, to),
            "desired-state/conf/settings.sops.yaml": sops_yaml({"mode": "strict"}, to),
        },
    )
    spec = _load(root, key=key).services["web"]
    by_name = {g.name: g for g in (*spec.secrets, *spec.configs)}
    assert by_name["app-env"].content == b'DB_PASSWORD="pa ss\\"word"\n'
    assert by_name["token"].content == b"token-from-git"
    assert by_name["settings"].content == b"mode: strict\n"
    assert all(g.sensitive for g in by_name.values())
    # The VM's own environment wins over git, as for ${VAR}.
    again = _load(root, key=key, environ={"API_TOKEN": "from-the-vm"}).services["web"]
    assert {g.name: g.content for g in again.secrets}["token"] == b"from-the-vm"


def test_an_undecryptable_secret_file_is_reported_once(tmp_path: Path) -> None:
    key = tmp_path / "vm" / "age.key"
    keygen(key)
    other = tmp_path / "other.key"
    keygen(other)
    root = _repo(
        tmp_path / "repo",
        {
            "desired-state/compose.yaml": (
                "name: shop\nservices:\n  web:\n    image: nginx\n    secrets: [s]\n"
                "secrets:\n  s:\n    file: ./s.sops.env\n"
            ),
            "desired-state/s.sops.env": sops_dotenv({"A": "value"}, recipient_of(other)[0]),
        },
    )
    with pytest.raises(InvalidDesiredState) as caught:
        _load(root, key=key)
    lines = [str(issue) for issue in caught.value.issues]
    assert len(lines) == 1, lines
    assert "s.sops.env: cannot decrypt" in lines[0]


def test_the_archive_gives_each_file_its_path_owner_and_mode(tmp_path: Path) -> None:
    root = _repo(
        tmp_path,
        {
            "desired-state/compose.yaml": (
                "name: shop\nservices:\n  web:\n    image: nginx\n    secrets:\n"
                "      - source: pw\n        uid: '103'\n        gid: '104'\n        mode: 0400\n"
                "    configs: [conf]\n"
                "secrets:\n  pw:\n    file: ./pw.txt\nconfigs:\n  conf:\n    content: x=1\n"
            ),
            "desired-state/pw.txt": "secret-value",
        },
    )
    spec = _load(root).services["web"]
    data = grant_archive((*spec.secrets, *spec.configs))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["conf", "run/secrets/pw"]
        pw = members["run/secrets/pw"]
        assert (pw.uid, pw.gid, pw.mode, pw.size) == (103, 104, 0o400, len("secret-value"))
        assert members["conf"].mode == 0o444
        assert (members["conf"].uid, members["conf"].gid) == (
            0,
            0,
        )
        extracted = tar.extractfile(pw)
        assert extracted is not None
        assert extracted.read() == b"secret-value"


def test_a_secret_file_too_large_to_hold_in_memory_is_refused_at_its_line(
    tmp_path: Path,
) -> None:
    root = _repo(
        tmp_path,
        {
            "desired-state/compose.yaml": COMPOSE,
            "desired-state/db-password.txt": "x" * (1024 * 1024 + 1),
            "desired-state/site.conf": "listen 80\n",
        },
    )
    with pytest.raises(InvalidDesiredState) as refused:
        _load(root)
    messages = [str(issue) for issue in refused.value.issues]
    assert messages == [
        "desired-state/compose.yaml:19: secrets.db-password.file: desired-state/db-password.txt "
        "holds 1048577 bytes: a secret is put into the container in memory, so it may hold at "
        "most 1024 KiB (mount a larger file as a volume instead)"
    ]


def test_in_swarm_mode_a_secret_over_swarms_cap_is_refused_at_its_line(tmp_path: Path) -> None:
    compose = (
        "name: shop\n"
        "services:\n"
        "  web:\n"
        "    image: registry.example/web:1\n"
        "    secrets: [token]\n"
        "secrets:\n"
        "  token:\n"
        "    file: ./token.txt\n"
    )
    root = _repo(
        tmp_path,
        {"desired-state/compose.yaml": compose, "desired-state/token.txt": "x" * (500 * 1024 + 1)},
    )
    with pytest.raises(InvalidDesiredState) as refused:
        load_desired_state(root, project=None, environ={}, engine_mode="swarm")
    assert [str(issue) for issue in refused.value.issues] == [
        "desired-state/compose.yaml:8: secrets.token.file: desired-state/token.txt holds 512001 "
        "bytes: Swarm keeps a secret in its own store, at most 500 KiB (mount a larger file as "
        "a volume instead)"
    ]
    # On one engine the same file is fine.
    assert load_desired_state(root, project=None, environ={}).services["web"].secrets
