"""``reconciler backup key`` against real restic: a key rotation of a file:// repository.

The commands run in-process through ``reconciler.cli.main``, with the key in an
env file in tmp_path as on a VM; restic's cache goes to tmp_path too.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from reconciler.adapters.restic import Repository, WrongKey
from reconciler.backup.backup_key import open_repository
from reconciler.cli import main
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
