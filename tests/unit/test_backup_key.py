"""``reconciler backup key`` and ``backup/backup_key.py`` without restic.

A fake runner plays restic's ``key list | add | remove`` over an in-memory set
of keys; tests/integration/test_backup_key.py rotates a key of a real repository.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import pytest

from reconciler.adapters.restic import Completed, Key, Repository
from reconciler.backup.backup_jobs import BackupContext
from reconciler.backup.backup_key import check_new_key, key_to_remove, open_repository
from reconciler.cli import build_parser, main
from reconciler.cli.backup import cmd_key
from reconciler.errors import BackupKeyMissing, BackupKeyRefused
from reconciler.redaction import forget_secrets
from reconciler.settings import Settings, load_settings

CURRENT = "current-key-0123456789abcdef"
NEW = "new-key-fedcba9876543210"
TARGET = "file:///srv/backups/prod"


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    yield
    forget_secrets()


class FakeRestic:
    """restic's key commands over a dict of password -> id; records every call."""

    def __init__(self) -> None:
        self.keys = {CURRENT: "aaaa1111", "older-key-0000000000": "bbbb2222"}
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout_s: float,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> Completed:
        self.calls.append((list(args), dict(env)))
        password = env["RESTIC_PASSWORD"]
        if password not in self.keys:
            return Completed(1, [], "Fatal: wrong password or no key found\n")
        match list(args):
            case ["key", "list", "--json"]:
                listed = [
                    {"id": ident, "current": secret == password, "userName": "root"}
                    for secret, ident in self.keys.items()
                ]
                return Completed(0, [json.dumps(listed)])
            case ["key", "add", "--new-password-file", path]:
                self.keys[Path(path).read_text().strip()] = f"cccc{len(self.keys):04d}"
                return Completed(0, ["saved new key"])
            case ["key", "remove", ident]:
                self.keys = {s: i for s, i in self.keys.items() if i != ident}
                return Completed(0, [f"removed key {ident}"])
        raise AssertionError(f"unexpected restic call: {args}")

    def arguments(self) -> str:
        return " ".join(a for args, _ in self.calls for a in args)


def no_context(settings: Settings) -> BackupContext:
    raise AssertionError("--target was given: backup.yaml must not be loaded")


def run_key(
    argv: list[str],
    restic: FakeRestic,
    *,
    environ: dict[str, str] | None = None,
    stdin: str = "",
) -> int:
    args = build_parser().parse_args(["backup", "key", *argv, "--target", TARGET])
    settings = load_settings(
        {"RECONCILER_BACKUP_KEY": CURRENT, "RECONCILER_PROJECT": "shop", **(environ or {})}
    )
    return cmd_key(args, settings, no_context, stdin=io.StringIO(stdin), runner=restic)


# --- the arguments ---------------------------------------------------------------------------


def test_a_new_key_is_never_an_argument() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["backup", "key", "add", NEW])
    with pytest.raises(SystemExit):
        parser.parse_args(["backup", "key", "remove"])  # which one must be said
    args = parser.parse_args(["backup", "key", "remove", "bbbb", "--target", TARGET])
    assert (args.key_command, args.key_id, args.target) == ("remove", "bbbb", TARGET)


def test_without_a_target_the_applied_backup_yaml_names_it() -> None:
    asked: list[Settings] = []

    class Context:
        def target(self, override: str | None = None) -> str:
            return TARGET

    def load(settings: Settings) -> BackupContext:
        asked.append(settings)
        return Context()  # type: ignore[return-value]  # only target() is used

    args = build_parser().parse_args(["backup", "key", "list"])
    settings = load_settings({"RECONCILER_BACKUP_KEY": CURRENT})
    restic = FakeRestic()
    assert cmd_key(args, settings, load, runner=restic) == 0
    assert asked == [settings]
    assert restic.calls[0][1]["RESTIC_REPOSITORY"] == "/srv/backups/prod"


# --- list, add, remove -------------------------------------------------------------------------


def test_list_marks_the_key_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_key(["list"], FakeRestic()) == 0
    out = capsys.readouterr().out
    assert "* aaaa1111" in out
    assert "  bbbb2222" in out
    assert CURRENT not in out

    assert run_key(["list", "--json"], FakeRestic()) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["id"], k["current"]) for k in listed] == [("aaaa1111", True), ("bbbb2222", False)]


@pytest.mark.parametrize("source", ["environment", "stdin"])
def test_add_reads_the_new_key_from_the_environment_or_stdin(
    source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    restic = FakeRestic()
    if source == "environment":
        status = run_key(["add"], restic, environ={"RECONCILER_NEW_BACKUP_KEY": NEW})
    else:
        status = run_key(["add"], restic, stdin=f"{NEW}\n")

    assert status == 0, capsys.readouterr().err
    assert restic.keys[NEW] == "cccc0002"
    assert NEW not in restic.arguments()  # a file restic reads, never an argument
    assert all(env["RESTIC_PASSWORD"] == CURRENT for _, env in restic.calls)
    out = capsys.readouterr().out
    assert "added key cccc0002" in out
    assert "RECONCILER_BACKUP_KEY" in out
    assert "docker restart shop-reconciler-1" in out
    assert "reconciler backup key remove aaaa1111" in out  # the old one, by id
    assert NEW not in out


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "no new key: set RECONCILER_NEW_BACKUP_KEY"),
        ("y\n", "at least 16"),
        (f"{CURRENT}\n", "the one in use"),
        ("first-line-of-a-key\nsecond-line-of-it\n", "line break"),
        ("x" * 5000, "more than 4096 characters"),
    ],
)
def test_add_refuses_a_key_that_would_not_do(
    stdin: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    restic = FakeRestic()
    assert run_key(["add"], restic, stdin=stdin) == 1
    err = capsys.readouterr().err
    assert err.startswith("reconciler backup key add: ")
    assert message in err
    assert len(restic.keys) == 2
    assert not any(args[:2] == ["key", "add"] for args, _ in restic.calls)


def test_remove_takes_an_id_or_its_start_and_never_the_key_in_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    restic = FakeRestic()
    assert run_key(["remove", "aaaa"], restic) == 1
    assert "aaaa1111 is the one in use" in capsys.readouterr().err
    assert run_key(["remove", "dddd"], restic) == 1
    assert "no key dddd in the repository (its keys: aaaa1111, bbbb2222)" in (
        capsys.readouterr().err
    )
    assert run_key(["remove", "bbbb;rm"], restic) == 1
    assert "is not a key id" in capsys.readouterr().err
    assert not any(args[:2] == ["key", "remove"] for args, _ in restic.calls)

    assert run_key(["remove", "bbbb"], restic) == 0
    assert "removed key bbbb2222" in capsys.readouterr().out
    assert list(restic.keys.values()) == ["aaaa1111"]


def test_a_wrong_key_is_said_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"RECONCILER_BACKUP_KEY": "some-other-key-0000000"}
    assert run_key(["list"], FakeRestic(), environ=environ) == 1
    err = capsys.readouterr().err
    assert "does not open with RECONCILER_BACKUP_KEY" in err
    assert "some-other-key" not in err


# --- the missing key ---------------------------------------------------------------------------


def test_a_missing_key_names_the_setting_and_the_env_file() -> None:
    with pytest.raises(BackupKeyMissing) as caught:
        open_repository(
            "s3://user:pw@my-bucket/prod", {"RECONCILER_ENV_FILE": "/etc/site/reconciler.env"}
        )
    message = str(caught.value)
    assert message.startswith("RECONCILER_BACKUP_KEY is not set")
    assert "put it in /etc/site/reconciler.env" in message
    assert "s3://my-bucket/prod" in message
    assert "pw" not in message

    with pytest.raises(BackupKeyMissing, match=r"put it in /etc/reconciler/reconciler\.env"):
        open_repository(TARGET, {"RECONCILER_BACKUP_KEY": ""})
    with pytest.raises(BackupKeyMissing, match=r"put it in /tmp/read\.env"):
        open_repository(TARGET, {}, env_file=Path("/tmp/read.env"))


def test_the_cli_says_which_setting_is_missing_and_where_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "reconciler.env"
    env_file.write_text("RECONCILER_PROJECT=site\n")
    monkeypatch.setenv("RECONCILER_ENV_FILE", str(env_file))
    monkeypatch.delenv("RECONCILER_BACKUP_KEY", raising=False)
    for action in (["list"], ["add"], ["remove", "aaaa"]):
        assert main(["backup", "key", *action, "--target", TARGET]) == 1
        err = capsys.readouterr().err
        assert "RECONCILER_BACKUP_KEY is not set" in err
        assert f"put it in {env_file}" in err


def test_the_repository_gets_the_key_and_the_s3_settings_only() -> None:
    restic = FakeRestic()
    environ = {
        "RECONCILER_BACKUP_KEY": CURRENT,
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        "MARIADB_PASSWORD": "not-for-restic",
    }
    repo = open_repository("s3://my-bucket/prod", environ, runner=restic)
    assert isinstance(repo, Repository)
    assert CURRENT not in repr(repo)
    repo.list_keys()
    ((args, env),) = restic.calls
    assert env["RESTIC_PASSWORD"] == CURRENT
    assert env["RESTIC_REPOSITORY"] == "s3:http://minio:9000/my-bucket/prod"
    assert env["AWS_ACCESS_KEY_ID"] == "AKIA"
    assert "MARIADB_PASSWORD" not in env
    assert CURRENT not in " ".join(args)


# --- the rules, on their own --------------------------------------------------------------------


def test_a_new_key_is_stripped_as_restic_and_the_env_file_would() -> None:
    assert check_new_key(f"  {NEW}\r\n", current=CURRENT) == NEW
    with pytest.raises(BackupKeyRefused, match="empty"):
        check_new_key(" \n", current=CURRENT)


def test_an_ambiguous_id_start_is_refused() -> None:
    keys = [
        Key(id="abcd0001", current=True, user="", host="", created=""),
        Key(id="abcd0002", current=False, user="", host="", created=""),
    ]
    with pytest.raises(BackupKeyRefused, match="start of 2 key ids"):
        key_to_remove(keys, "abcd")
    assert key_to_remove(keys, "abcd0002") is keys[1]
