"""The SOPS decoder against files the real sops wrote, and against tampering.

Real fixtures (tests/unit/secrets_fixtures), with the test keys their projects publish:

- ``flux-secret.age.yaml`` + ``flux-age.key``: fluxcd/kustomize-controller's
  testdata (sops 3.7.0): nested, ``encrypted_regex``, so the MAC covers values
  that are not encrypted;
- ``sopsnix-native-ssh.sops.yaml`` + ``sopsnix-ssh-ed25519.key``: Mic92/sops-nix's
  test assets (sops 3.13.3), flat, for an ssh-ed25519 age recipient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyrage
import pytest

from reconciler.model import sops_format
from reconciler.model.sops_format import NoMatchingKey, SopsError
from reconciler.redaction import forget_secrets
from tests.fixtures.sops_encoder import sops_dotenv, sops_json, sops_yaml

FIXTURES = Path(__file__).parent / "secrets_fixtures"
FLUX = (FIXTURES / "flux-secret.age.yaml").read_text()
SOPSNIX = (FIXTURES / "sopsnix-native-ssh.sops.yaml").read_text()


@pytest.fixture(autouse=True)
def _forget() -> Any:
    yield
    forget_secrets()


def flux_identity() -> Any:
    return pyrage.x25519.Identity.from_str((FIXTURES / "flux-age.key").read_text().split()[-1])


def sopsnix_identity() -> Any:
    return pyrage.ssh.Identity.from_buffer((FIXTURES / "sopsnix-ssh-ed25519.key").read_bytes())


def test_a_real_nested_file_with_encrypted_regex_decrypts_and_its_mac_holds() -> None:
    tree = sops_format.decrypt(FLUX, "yaml", [flux_identity()])
    assert tree == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sops-age"},
        "stringData": {"secret": "my-sops-age-secret"},
    }


def test_a_real_flat_file_for_an_ssh_recipient_decrypts() -> None:
    assert sops_format.decrypt(SOPSNIX, "yaml", [sopsnix_identity()]) == {"test_key": "test_value"}


def test_a_real_file_with_an_int_and_a_multi_line_value() -> None:
    identity = pyrage.x25519.Identity.from_str(
        (FIXTURES / "helmsecrets-age.key").read_text().split()[-1]
    )
    text = (FIXTURES / "helmsecrets-secrets.age.yaml").read_text()
    tree = sops_format.decrypt(text, "yaml", [identity])
    assert tree["global_secret"] == "global_age"
    assert tree["service"] == {"port": 92}
    assert tree["key"].startswith("-----BEGIN PGP MESSAGE-----\n")
    # The int's ciphertext changed: GCM refuses it.
    with pytest.raises(SopsError, match=r"service\.port: the value does not decrypt"):
        sops_format.decrypt(text.replace("data:RPI=", "data:RPM="), "yaml", [identity])


def test_several_identities_one_of_which_matches() -> None:
    other = pyrage.x25519.Identity.generate()
    assert sops_format.decrypt(SOPSNIX, "yaml", [other, sopsnix_identity()])["test_key"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # A value outside encrypted_regex is still covered by the MAC.
        ("kind: Secret", "kind: ConfigMap", "MAC mismatch"),
        ("name: sops-age", "name: other", "MAC mismatch"),
        # A changed ciphertext fails GCM's own tag.
        ("data:RwzrBF8wy16SpfbQoeADeKyz", "data:RwzrBF8wy16SpfbQoeADeKyy", "does not decrypt"),
        # A ciphertext swapped for a plain value: the rules say it is encrypted.
        (
            "secret: ENC[AES256_GCM,data:RwzrBF8wy16SpfbQoeADeKyz,"
            "iv:DuJce2Ebx1Y49DaLCOJ74OOkgiv21roxhz/sZqKCSSs=,tag:Gg9XHapZI5q+rvtgeY6nrg==,"
            "type:str]",
            "secret: my-sops-age-secret",
            "not encrypted, but the file says it is",
        ),
        # The MAC itself changed, or moved to another time.
        ('lastmodified: "2021-04-06T09:07:05Z"', 'lastmodified: "2021-04-06T09:07:06Z"', "MAC"),
        ("tag:61JGbnEw35tv6WnGj46JOw==", "tag:61JGbnEw35tv6WnGj46JOA==", "MAC mismatch"),
    ],
)
def test_a_tampered_real_file_is_rejected(old: str, new: str, expected: str) -> None:
    assert old in FLUX
    with pytest.raises(SopsError, match=expected):
        sops_format.decrypt(FLUX.replace(old, new), "yaml", [flux_identity()])


def test_a_file_without_mac_is_rejected() -> None:
    text = "\n".join(line for line in FLUX.splitlines() if not line.strip().startswith("mac:"))
    with pytest.raises(SopsError, match="no MAC"):
        sops_format.decrypt(text, "yaml", [flux_identity()])


def test_a_value_moved_to_another_key_is_rejected() -> None:
    # The additional data is the key path: a ciphertext copied under another
    # name does not decrypt.
    recipient = str(flux_identity().to_public())
    text = sops_dotenv({"A": "alpha-value", "B": "bravo-value"}, recipient)
    lines = text.splitlines()
    a_value = lines[0].partition("=")[2]
    lines[1] = f"B={a_value}"
    with pytest.raises(SopsError, match="B: the value does not decrypt"):
        sops_format.decrypt("\n".join(lines), "dotenv", [flux_identity()])


def test_the_wrong_key_is_no_matching_key() -> None:
    with pytest.raises(NoMatchingKey):
        sops_format.decrypt(FLUX, "yaml", [pyrage.x25519.Identity.generate()])
    _tree, metadata = sops_format.parse(FLUX, "yaml")
    assert sops_format.recipients(metadata) == [
        "age1l44xcng8dqj32nlv6d930qvvrny05hglzcv9qpc7kxjc6902ma4qufys29"
    ]


@pytest.mark.parametrize(("encode", "kind"), [(sops_dotenv, "dotenv"), (sops_json, "json")])
def test_our_encoder_round_trips(encode: Any, kind: Any) -> None:
    identity = pyrage.x25519.Identity.generate()
    values = {"DB_PASSWORD": "s3cr3t-p4ss", "MULTI": "line one\nline two", "EMPTY": ""}
    text = encode(values, str(identity.to_public()))
    assert sops_format.decrypt(text, kind, [identity]) == values


def test_typed_values_decrypt_to_their_types() -> None:
    identity = pyrage.x25519.Identity.generate()
    text = sops_yaml({"PORT": 5432, "ON": True, "NAME": "x"}, str(identity.to_public()))
    assert sops_format.decrypt(text, "yaml", [identity]) == {"PORT": 5432, "ON": True, "NAME": "x"}


def test_dotenv_metadata_is_unflattened() -> None:
    identity = pyrage.x25519.Identity.generate()
    text = sops_dotenv({"A": "value-a"}, str(identity.to_public()))
    _tree, metadata = sops_format.parse(text, "dotenv")
    assert metadata["age"][0]["recipient"] == str(identity.to_public())
    assert metadata["age"][0]["enc"].startswith("-----BEGIN AGE ENCRYPTED FILE-----\n")


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("A=1\n", "dotenv", "no sops_ metadata"),
        ("A: 1\n", "yaml", "no 'sops' metadata"),
        ("[1]", "json", "expected a mapping"),
        ("{", "json", "not valid JSON"),
        ("A=1\nnonsense\nsops_version=3\n", "dotenv", "line 2: not KEY=VALUE"),
        ('{"A": "x", "sops": {"pgp": [{"fp": "X"}]}}', "json", "encrypted with pgp only"),
    ],
)
def test_malformed_files_say_what_is_wrong(text: str, kind: Any, expected: str) -> None:
    with pytest.raises(SopsError, match=expected):
        sops_format.decrypt(text, kind, [pyrage.x25519.Identity.generate()])
