"""Decrypted values never reach a message, a log line, a state file or a label."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pyrage
import pytest

from reconciler.decide.hashing import config_hash
from reconciler.errors import InvalidDesiredState, Issue
from reconciler.logs import LOGGER, configure, event
from reconciler.model.desired import ServiceSpec
from reconciler.model.loading import load_desired_state
from reconciler.model.secrets import read_secrets
from reconciler.redaction import (
    MASK,
    forget_secrets,
    redact_text,
    register_secret,
    set_fingerprint_key,
)
from reconciler.secret_keys import keygen, load_keyring, recipient_of
from reconciler.state.files import atomic_write_json
from tests.fixtures.sops_encoder import sops_dotenv

SECRET = "Pa55-w0rd'with\\quote"


@pytest.fixture(autouse=True)
def _forget() -> Any:
    forget_secrets()
    yield
    forget_secrets()


def test_every_quoted_form_of_a_secret_is_masked() -> None:
    assert register_secret(SECRET)
    for form in (SECRET, repr(SECRET), json.dumps(SECRET), f"x={SECRET}; y"):
        assert SECRET not in redact_text(form)
        assert repr(SECRET)[1:-1] not in redact_text(form)
        assert json.dumps(SECRET)[1:-1] not in redact_text(form)
        assert MASK in redact_text(form)


def test_each_line_of_a_multi_line_secret_is_masked() -> None:
    register_secret("-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----")
    assert redact_text("bad line: AAAABBBBCCCC") == f"bad line: {MASK}"


def test_a_short_value_is_not_masked_and_says_so() -> None:
    assert not register_secret("on")
    assert redact_text("restart: on-failure") == "restart: on-failure"


def test_an_issue_never_holds_a_secret() -> None:
    register_secret(SECRET)
    issue = Issue("desired-state/compose.yaml", 3, "services.db.ports[0]", f"bad '{SECRET}'")
    assert SECRET not in str(issue)
    assert SECRET not in issue.message


def test_log_lines_mask_secrets_in_every_field() -> None:
    register_secret(SECRET)
    stream = io.StringIO()
    configure("json", stream=stream)
    try:
        event("x", level=logging.WARNING, text=SECRET, items=[SECRET], nested={"a": SECRET})
    finally:
        LOGGER.handlers.clear()
    line = stream.getvalue()
    assert SECRET not in line
    assert json.dumps(SECRET)[1:-1] not in line
    assert line.count(MASK) == 3


def test_state_files_mask_messages_but_never_ids(tmp_path: Path) -> None:
    register_secret("abcdef123456")
    path = tmp_path / "status.json"
    atomic_write_json(
        path,
        {
            "last_error": "port 'abcdef123456' is wrong",
            "history": [{"message": "abcdef123456"}],
            "applied_commit": "abcdef1234567890",
        },
    )
    data = json.loads(path.read_text())
    assert data["last_error"] == f"port '{MASK}' is wrong"
    assert data["history"][0]["message"] == MASK
    assert data["applied_commit"] == "abcdef1234567890"


def test_a_validation_error_that_quotes_a_decrypted_value_masks_it(tmp_path: Path) -> None:
    key = tmp_path / "age.key"
    keygen(key)
    root = tmp_path / "repo"
    (root / "desired-state").mkdir(parents=True)
    (root / "desired-state/compose.yaml").write_text(
        "services:\n  db:\n    image: busybox\n    ports: ['${DB_PASSWORD}']\n"
        "    healthcheck: {test: [CMD, 'true'], interval: '${DB_PASSWORD}'}\n"
    )
    (root / "desired-state/s.sops.env").write_text(
        sops_dotenv({"DB_PASSWORD": "hunter2-but-longer"}, recipient_of(key)[0])
    )
    secrets = read_secrets(root, directory="desired-state", keyring=load_keyring(key))
    with pytest.raises(InvalidDesiredState) as caught:
        load_desired_state(root, project="p", environ={}, secrets=secrets)
    text = str(caught.value)
    assert "ports[0]" in text
    assert "interval" in text
    assert "hunter2-but-longer" not in text
    assert MASK in text


def test_the_age_identity_itself_is_masked(tmp_path: Path) -> None:
    key = tmp_path / "age.key"
    keygen(key)
    load_keyring(key)
    identity = key.read_text().split()[-1]
    assert identity.startswith("AGE-SECRET-KEY-1")
    assert identity not in redact_text(f"oops: {identity}")


SECRETS = frozenset({"correct-horse-battery", "another-long-secret", "inner-secret-value"})


def _service(password: str, secrets: frozenset[str] = SECRETS) -> ServiceSpec:
    return ServiceSpec(
        name="db",
        image="busybox",
        environment={"DB_PASSWORD": password},
        command=("serve", f"--password={password}"),
        secret_values=secrets,
    )


def test_the_config_hash_of_a_secret_is_keyed_and_still_follows_the_value() -> None:
    plain = config_hash(_service("correct-horse-battery", frozenset()))
    set_fingerprint_key(b"vm-one")
    keyed = config_hash(_service("correct-horse-battery"))
    # Not the digest anyone could recompute from git and a guess...
    assert keyed != plain
    # ...stable on this VM, different with another VM's key...
    assert config_hash(_service("correct-horse-battery")) == keyed
    set_fingerprint_key(b"vm-two")
    assert config_hash(_service("correct-horse-battery")) != keyed
    # ...and a new secret still recreates the service.
    assert config_hash(_service("another-long-secret")) != config_hash(
        _service("correct-horse-battery")
    )


def test_a_value_holding_a_secret_inside_a_url_is_keyed_too() -> None:
    set_fingerprint_key(b"k")
    one = config_hash(_service("mysql://u:inner-secret-value@db/x"))
    set_fingerprint_key(b"l")
    assert config_hash(_service("mysql://u:inner-secret-value@db/x")) != one


def test_a_spec_without_secrets_hashes_as_before() -> None:
    before = config_hash(_service("not-a-secret", frozenset()))
    set_fingerprint_key(bytes(str(pyrage.x25519.Identity.generate().to_public()), "ascii"))
    assert config_hash(_service("not-a-secret", frozenset())) == before
    # Only the desired state says what is secret, never what the process saw before.
    register_secret("not-a-secret")
    assert config_hash(_service("not-a-secret", frozenset())) == before
    # The field itself is never dumped (labels, plans, status).
    assert "secret_values" not in _service("x").model_dump()
    assert "correct-horse" not in repr(_service("x"))
