"""Encrypted files in the desired state: age env files (the real ``age`` CLI), the key
file, precedence against the VM's environment, ``env_file:``, and what a failure says."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pyrage
import pytest

from reconciler.errors import InvalidDesiredState, KeyFileError
from reconciler.model.loading import load_desired_state
from reconciler.model.secrets import read_secrets
from reconciler.redaction import forget_secrets
from reconciler.secret_keys import keygen, load_keyring, recipient_of
from reconciler.settings import load_settings
from tests.fixtures import tools
from tests.fixtures.sops_encoder import sops_dotenv, sops_json, sops_yaml

FIXTURES = Path(__file__).parent / "secrets_fixtures"

COMPOSE = """\
services:
  db:
    image: reconciler-local/busybox:latest
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
      API_TOKEN: ${API_TOKEN:-none}
"""


@pytest.fixture(autouse=True)
def _forget() -> Any:
    yield
    forget_secrets()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "vm" / "age.key"
    keygen(path)
    return path


def recipient(key_file: Path) -> str:
    return recipient_of(key_file)[0]


def repo(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    root = tmp_path / "repo"
    for name, content in {"desired-state/compose.yaml": COMPOSE, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def age_encrypt(text: str, to: str, *, armor: bool) -> bytes:
    args = [tools.require("age"), "-r", to, *(["-a"] if armor else [])]
    return subprocess.run(args, input=text.encode(), capture_output=True, check=True).stdout


def load(root: Path, key: Path, environ: dict[str, str] | None = None) -> Any:
    secrets = read_secrets(root, directory="desired-state", keyring=load_keyring(key))
    return load_desired_state(root, project="p", environ=environ or {}, secrets=secrets)


# -- age env files, made with the real age CLI ---------------------------------------


@pytest.mark.parametrize("armor", [True, False])
def test_an_age_env_file_fills_variables(tmp_path: Path, key_file: Path, armor: bool) -> None:
    data = age_encrypt("DB_PASSWORD=from-age-file\n", recipient(key_file), armor=armor)
    root = repo(tmp_path, {"desired-state/db.env.age": data})
    desired = load(root, key_file)
    assert desired.services["db"].environment == {
        "DB_PASSWORD": "from-age-file",
        "API_TOKEN": "none",
    }


def test_a_decrypted_line_that_is_not_key_value_is_refused_at_its_line(
    tmp_path: Path, key_file: Path
) -> None:
    # python-dotenv alone logs such a line and skips it: the variable would be
    # silently missing. The line is not quoted: it holds a secret.
    text = "DB_PASSWORD=from-age-file\nAPI_TOKEN secret-token-value\n"
    data = age_encrypt(text, recipient(key_file), armor=True)
    root = repo(tmp_path, {"desired-state/db.env.age": data})
    with pytest.raises(InvalidDesiredState) as caught:
        load(root, key_file)
    message = str(caught.value)
    assert "line 2 of the decrypted file: not a KEY=VALUE line" in message
    assert "secret-token-value" not in message


def test_an_age_file_for_another_vm_says_which_key_this_vm_has(
    tmp_path: Path, key_file: Path
) -> None:
    other = pyrage.x25519.Identity.generate()
    data = age_encrypt("DB_PASSWORD=x\n", str(other.to_public()), armor=True)
    root = repo(tmp_path, {"desired-state/db.env.age": data})
    with pytest.raises(InvalidDesiredState) as caught:
        load(root, key_file)
    message = str(caught.value)
    assert message.startswith("desired-state/db.env.age: cannot decrypt: no matching key")
    assert recipient(key_file) in message
    # The unset ${DB_PASSWORD} that follows is not reported again.
    assert "is not set" not in message


def test_a_sops_file_for_another_vm_names_both_recipients(tmp_path: Path, key_file: Path) -> None:
    other = str(pyrage.x25519.Identity.generate().to_public())
    text = sops_dotenv({"DB_PASSWORD": "x"}, other)
    root = repo(tmp_path, {"desired-state/secrets.sops.env": text})
    with pytest.raises(InvalidDesiredState) as caught:
        load(root, key_file)
    assert f"the file is for {other}" in str(caught.value)
    assert f"holds {recipient(key_file)}" in str(caught.value)


def test_no_key_file_is_an_issue_only_when_a_file_is_encrypted(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "age.key"
    plain = repo(tmp_path, {})
    desired = load_desired_state(
        plain,
        project="p",
        environ={"DB_PASSWORD": "vm"},
        secrets=read_secrets(plain, directory="desired-state", keyring=load_keyring(missing)),
    )
    assert desired.services["db"].environment["DB_PASSWORD"] == "vm"
    someone = str(pyrage.x25519.Identity.generate().to_public())
    (plain / "desired-state/s.sops.json").write_text(sops_json({"A": "b"}, someone))
    with pytest.raises(InvalidDesiredState, match=r"s\.sops\.json: cannot decrypt: this VM"):
        load(plain, missing)


def test_a_broken_key_file_never_quotes_its_lines(tmp_path: Path) -> None:
    key = tmp_path / "age.key"
    key.write_text("# comment\nAGE-SECRET-KEY-1TYPOTYPOTYPO\n")
    keyring = load_keyring(key)
    assert keyring.problem == f"{key}:2: not an age identity"


# -- SOPS files: formats, nesting, precedence --------------------------------------------


@pytest.mark.parametrize(
    ("name", "encode"),
    [("s.sops.env", sops_dotenv), ("s.sops.json", sops_json), ("s.sops.yaml", sops_yaml)],
)
def test_each_sops_format_fills_variables(
    tmp_path: Path, key_file: Path, name: str, encode: Any
) -> None:
    text = encode({"DB_PASSWORD": "from-git-secret", "API_TOKEN": 1234567}, recipient(key_file))
    root = repo(tmp_path, {f"desired-state/{name}": text})
    env = load(root, key_file).services["db"].environment
    assert env == {"DB_PASSWORD": "from-git-secret", "API_TOKEN": "1234567"}


def test_a_real_sops_file_from_the_ssh_key_fixture(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_bytes((FIXTURES / "sopsnix-ssh-ed25519.key").read_bytes())
    root = repo(
        tmp_path,
        {"desired-state/test.sops.yaml": (FIXTURES / "sopsnix-native-ssh.sops.yaml").read_text()},
    )
    secrets = read_secrets(root, directory="desired-state", keyring=load_keyring(key))
    assert secrets.values == {"test_key": "test_value"}
    assert secrets.sources == {"test_key": "desired-state/test.sops.yaml"}


def test_a_nested_value_names_the_file_and_key(tmp_path: Path, key_file: Path) -> None:
    text = sops_yaml({"db": {"password": "x"}}, recipient(key_file))
    root = repo(tmp_path, {"desired-state/s.sops.yaml": text})
    with pytest.raises(InvalidDesiredState, match=r"s\.sops\.yaml: cannot decrypt: db: a nested"):
        load(root, key_file)


def test_the_same_variable_in_two_files_is_an_issue(tmp_path: Path, key_file: Path) -> None:
    to = recipient(key_file)
    root = repo(
        tmp_path,
        {
            "desired-state/a.sops.env": sops_dotenv({"DB_PASSWORD": "one-value"}, to),
            "desired-state/b.sops.json": sops_json({"DB_PASSWORD": "two-value"}, to),
        },
    )
    with pytest.raises(InvalidDesiredState, match=r"also set in desired-state/a\.sops\.env"):
        load(root, key_file)


def test_the_vm_wins_real_environment_then_env_file_then_git(
    tmp_path: Path, key_file: Path
) -> None:
    to = recipient(key_file)
    compose = COMPOSE + "      THIRD: ${THIRD}\n"
    root = repo(
        tmp_path,
        {
            "desired-state/compose.yaml": compose,
            "desired-state/s.sops.env": sops_dotenv(
                {"DB_PASSWORD": "git-value", "API_TOKEN": "git-token", "THIRD": "git-third"}, to
            ),
        },
    )
    env_file = tmp_path / "reconciler.env"
    env_file.write_text("API_TOKEN=env-file-token\nDB_PASSWORD=env-file-password\n")
    settings = load_settings(
        {"RECONCILER_ENV_FILE": str(env_file), "DB_PASSWORD": "real-env-password"}
    )
    secrets = read_secrets(root, directory="desired-state", keyring=load_keyring(key_file))
    env = (
        load_desired_state(root, project="p", environ=settings.environ, secrets=secrets)
        .services["db"]
        .environment
    )
    assert env == {
        "DB_PASSWORD": "real-env-password",
        "API_TOKEN": "env-file-token",
        "THIRD": "git-third",
    }


def test_env_file_may_name_an_encrypted_file(tmp_path: Path, key_file: Path) -> None:
    compose = (
        "services:\n  app:\n    image: reconciler-local/busybox:latest\n"
        "    env_file: [app/app.sops.env]\n"
    )
    root = repo(
        tmp_path,
        {
            "desired-state/compose.yaml": compose,
            "desired-state/app/app.sops.env": sops_dotenv(
                {"SMTP_PASSWORD": "mail-secret"}, recipient(key_file)
            ),
        },
    )
    desired = load(root, key_file)
    assert desired.services["app"].environment == {"SMTP_PASSWORD": "mail-secret"}
    # A file in a subfolder serves env_file only, not ${VAR}.
    secrets = read_secrets(root, directory="desired-state", keyring=load_keyring(key_file))
    assert secrets.values == {}


def test_a_secret_in_a_label_is_refused(tmp_path: Path, key_file: Path) -> None:
    compose = COMPOSE + "    labels:\n      leak: ${DB_PASSWORD}\n"
    root = repo(
        tmp_path,
        {
            "desired-state/compose.yaml": compose,
            "desired-state/s.sops.env": sops_dotenv(
                {"DB_PASSWORD": "label-secret"}, recipient(key_file)
            ),
        },
    )
    with pytest.raises(InvalidDesiredState, match=r"services\.db\.labels\.leak: holds a value"):
        load(root, key_file)


# -- the key file ----------------------------------------------------------------------


def test_keygen_writes_mode_0600_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "age.key"
    first = keygen(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert recipient_of(path) == [first]
    with pytest.raises(KeyFileError, match="exists"):
        keygen(path)
    assert recipient_of(path) == [first]


def test_the_recipient_is_the_one_age_keygen_derives(key_file: Path) -> None:
    derived = subprocess.run(
        ["age-keygen", "-y", str(key_file)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert recipient_of(key_file) == [derived]


def test_a_key_file_may_hold_several_identities(tmp_path: Path) -> None:
    one, two = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    key = tmp_path / "age.key"
    key.write_text(f"# old\n{one}\n\n# new\n{two}\n")
    assert recipient_of(key) == [str(one.to_public()), str(two.to_public())]
    root = repo(
        tmp_path,
        {"desired-state/s.sops.env": sops_dotenv({"DB_PASSWORD": "rotated"}, str(one.to_public()))},
    )
    assert load(root, key).services["db"].environment["DB_PASSWORD"] == "rotated"


def test_the_cli_says_when_there_is_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.cli import main

    missing = tmp_path / "age.key"
    assert main(["secrets", "recipient", "--key-file", str(missing)]) == 1
    assert f"{missing} does not exist" in capsys.readouterr().err
    assert main(["secrets", "keygen", "--key-file", str(missing)]) == 0
    made = capsys.readouterr().out.splitlines()[-1]
    assert main(["secrets", "recipient", "--key-file", str(missing)]) == 0
    assert capsys.readouterr().out.strip() == made


def test_a_symlink_out_of_the_repository_is_never_read(tmp_path: Path, key_file: Path) -> None:
    outside = tmp_path / "vm.env"
    outside.write_text("VM_ONLY=x\n")
    root = repo(tmp_path, {})
    (root / "desired-state/steal.sops.env").symlink_to(outside)
    with pytest.raises(InvalidDesiredState, match=r"steal\.sops\.env: a symlink out"):
        load(root, key_file)
