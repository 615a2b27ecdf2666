"""``reconciler backup key`` against real restic: a key rotation of a file:// repository.

The commands run in-process through ``reconciler.cli.main``, with the key in an
env file in tmp_path as on a VM; restic's cache goes to tmp_path too.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from reconciler.adapters.restic import Repository
from reconciler.backup.backup_key import open_repository
from reconciler.cli import main
from reconciler.errors import WrongKey
from reconciler.redaction import forget_secrets
from tests.fixtures import tools

pytestmark = pytest.mark.integration

KEY_A = "key-a-" + "0123456789abcdef" * 2
KEY_B = "key-b-" + "fedcba9876543210" * 2


def test_a_key_is_rotated_add_b_then_remove_a(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tools.require("restic")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # restic's cache
    target = f"file://{tmp_path}/repo"
    env_file = tmp_path / "reconciler.env"
    monkeypatch.setenv("RECONCILER_ENV_FILE", str(env_file))
    monkeypatch.delenv("RECONCILER_BACKUP_KEY", raising=False)
    Repository(target, key=KEY_A, cache_dir=str(tmp_path / "cache")).ensure()

    def key(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = main(["backup", "key", *argv, "--target", target])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    try:
        env_file.write_text(f"RECONCILER_BACKUP_KEY={KEY_A}\n")
        status, out, err = key("add", stdin=f"{KEY_B}\n")
        assert status == 0, err
        # The command names the old key's id in its next step.
        named = re.search(r"reconciler backup key remove ([0-9a-f]{8})$", out.strip())
        assert named, out
        old_id = named.group(1)

        # B in the env file, as the operator does next; A is removed with B in use.
        env_file.write_text(f"RECONCILER_BACKUP_KEY={KEY_B}\n")
        status, out, err = key("list")
        assert status == 0, err
        assert f"  {old_id}" in out  # listed, not in use
        status, out, err = key("remove", old_id)
        assert status == 0, err
        assert f"removed key {old_id}" in out

        with pytest.raises(WrongKey) as caught:
            open_repository(target, {"RECONCILER_BACKUP_KEY": KEY_A}).snapshots()
        assert "does not open with RECONCILER_BACKUP_KEY" in str(caught.value)
        assert KEY_A not in str(caught.value)
        env_file.write_text(f"RECONCILER_BACKUP_KEY={KEY_A}\n")
        status, out, err = key("list")
        assert status == 1
        assert "does not open with RECONCILER_BACKUP_KEY" in err

        opened = open_repository(target, {"RECONCILER_BACKUP_KEY": KEY_B})
        assert opened.snapshots() == []
        (only,) = opened.list_keys()
        assert only.current
        assert only.id != old_id
    finally:
        forget_secrets()


def test_a_rotation_covers_every_target_and_a_forgotten_one_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/operations.md, "Rotating the backup key": prod and dev each keep their own keys."""
    tools.require("restic")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    prod, dev = f"file://{tmp_path}/prod", f"file://{tmp_path}/dev"
    env_file = tmp_path / "reconciler.env"
    monkeypatch.setenv("RECONCILER_ENV_FILE", str(env_file))
    monkeypatch.delenv("RECONCILER_BACKUP_KEY", raising=False)
    for target in (prod, dev):
        Repository(target, key=KEY_A, cache_dir=str(tmp_path / "cache")).ensure()

    def key(target: str, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = main(["backup", "key", *argv, "--target", target])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    def old_key_id(out: str) -> str:
        named = re.search(r"reconciler backup key remove ([0-9a-f]{8})$", out.strip())
        assert named, out
        return named.group(1)

    try:
        env_file.write_text(f"RECONCILER_BACKUP_KEY={KEY_A}\n")
        status, out, err = key(prod, "add", stdin=f"{KEY_B}\n")
        assert status == 0, err
        prod_old = old_key_id(out)
        # dev forgotten: once the env file holds B, dev refuses, and says it is dev.
        env_file.write_text(f"RECONCILER_BACKUP_KEY={KEY_B}\n")
        assert key(prod, "list")[0] == 0
        status, _out, err = key(dev, "list")
        assert status == 1
        assert "does not open with RECONCILER_BACKUP_KEY" in err
        assert f"{tmp_path}/dev" in err
        assert KEY_A not in err
        assert KEY_B not in err
        # Mended the documented way: the old key opens dev to add the new one.
        env_file.write_text(f"RECONCILER_BACKUP_KEY={KEY_A}\n")
        status, out, err = key(dev, "add", stdin=f"{KEY_B}\n")
        assert status == 0, err
        dev_old = old_key_id(out)
        env_file.write_text(f"RECONCILER_BACKUP_KEY={KEY_B}\n")
        for target, old in ((prod, prod_old), (dev, dev_old)):
            status, out, err = key(target, "remove", old)
            assert status == 0, err
            (only,) = open_repository(target, {"RECONCILER_BACKUP_KEY": KEY_B}).list_keys()
            assert only.current
            with pytest.raises(WrongKey):
                open_repository(target, {"RECONCILER_BACKUP_KEY": KEY_A}).snapshots()
    finally:
        forget_secrets()
