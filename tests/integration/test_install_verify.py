"""install.sh's signed-commit step (``ensure_verification``) on its own: its functions
are sourced (everything above "main") and run against a config dir in tmp_path,
with real gpg and ssh-keygen keys; the settings it writes then verify real commits.

The whole installer runs in tests/integration/test_install.py; this covers what
``--verify`` adds without building an image or deploying a stack.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.git_source import GitSource
from reconciler.settings import load_settings
from tests.fixtures.git_remotes import GitWorkRepo
from tests.fixtures.signing_keys import GpgKeys, SshSigner, signed_commit

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def run_step(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Source install.sh's functions and run ensure_verification with ``variables``."""
    library = tmp_path / "install-functions.sh"
    text = (ROOT / "install.sh").read_text()
    library.write_text(text[: text.index("# --- main")])
    assignments = "".join(f"{name}='{value}'; " for name, value in variables.items())
    script = f". '{library}'; {assignments}OS_ID=debian; ensure_verification"
    return subprocess.run(
        ["sh", "-c", script, "install.sh"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    config = tmp_path / "etc"
    config.mkdir()
    # A project no container has: the step restarts "<project>-reconciler-1" when it exists.
    (config / "reconciler.env").write_text(f"RECONCILER_PROJECT=t-install-{tmp_path.name[-8:]}\n")
    return config


@pytest.fixture
def gpg_keys() -> Iterator[GpgKeys]:
    keys = GpgKeys.make()
    yield keys
    keys.close()


def test_verify_gpg_installs_a_keyring_that_verifies(
    tmp_path: Path, config_dir: Path, gpg_keys: GpgKeys, git_workrepo: GitWorkRepo
) -> None:
    alice = gpg_keys.generate("alice@example.com")
    exported = tmp_path / "keys.asc"
    exported.write_text(gpg_keys.gpg("--armor", "--export", "alice@example.com"))

    result = run_step(
        tmp_path,
        CONFIG_DIR=str(config_dir),
        ENV_FILE=str(config_dir / "reconciler.env"),
        VERIFY="gpg",
        GPG_KEYS=str(exported),
    )

    assert result.returncode == 0, result.stderr
    assert "1 public key(s) in" in result.stderr
    settings = load_settings(
        {
            "RECONCILER_REPO": git_workrepo.file_url,
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_ENV_FILE": str(config_dir / "reconciler.env"),
        }
    )
    assert settings.verify == "gpg"
    assert settings.gpg_home == config_dir / "gnupg"
    assert settings.signature_policy is not None
    assert not list(settings.gpg_home.glob("S.*"))  # no agent socket left behind
    assert "trust-model always" in (settings.gpg_home / "gpg.conf").read_text()
    commit = signed_commit(git_workrepo, {"a.txt": "1"}, alice)
    source = GitSource(git_workrepo.file_url, branch="main", cache_dir=tmp_path / "cache")
    assert source.verify(commit, settings.signature_policy).ok


def test_verify_gpg_refuses_a_private_key(
    tmp_path: Path, config_dir: Path, gpg_keys: GpgKeys
) -> None:
    gpg_keys.generate("alice@example.com")
    secret = tmp_path / "secret.asc"
    secret.write_text(
        gpg_keys.gpg(
            "--armor",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--export-secret-keys",
            "alice@example.com",
        )
    )

    result = run_step(
        tmp_path,
        CONFIG_DIR=str(config_dir),
        ENV_FILE=str(config_dir / "reconciler.env"),
        VERIFY="gpg",
        GPG_KEYS=str(secret),
    )

    assert result.returncode == 1
    assert "holds a private key" in result.stderr
    assert not (config_dir / "gnupg").exists()
    assert "RECONCILER_VERIFY" not in (config_dir / "reconciler.env").read_text()


def test_verify_ssh_copies_the_allowed_signers(tmp_path: Path, config_dir: Path) -> None:
    alice = SshSigner.make(tmp_path / "keys", "alice")
    signers = tmp_path / "signers"
    signers.write_text(alice.allowed_line)

    result = run_step(
        tmp_path,
        CONFIG_DIR=str(config_dir),
        ENV_FILE=str(config_dir / "reconciler.env"),
        VERIFY="ssh",
        ALLOWED_SIGNERS=str(signers),
    )

    assert result.returncode == 0, result.stderr
    assert (config_dir / "allowed_signers").read_text() == alice.allowed_line
    env = (config_dir / "reconciler.env").read_text()
    assert "RECONCILER_VERIFY=ssh\n" in env
    assert f"RECONCILER_ALLOWED_SIGNERS={config_dir}/allowed_signers\n" in env

    # Turned off again: the keys stay, the mode goes.
    result = run_step(
        tmp_path,
        CONFIG_DIR=str(config_dir),
        ENV_FILE=str(config_dir / "reconciler.env"),
        VERIFY="off",
    )
    assert result.returncode == 0, result.stderr
    assert "RECONCILER_VERIFY=off\n" in (config_dir / "reconciler.env").read_text()


def test_bad_verify_flags_stop_before_anything(tmp_path: Path) -> None:
    for args, says in [
        (["--verify", "yes"], "--verify takes ssh, gpg or off, not 'yes'"),
        (["--verify", "gpg", "--allowed-signers", "/etc/hostname"], "goes with --verify ssh"),
        (["--allowed-signers", str(tmp_path / "missing")], "cannot read"),
    ]:
        result = subprocess.run(
            ["sh", str(ROOT / "install.sh"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert says in result.stderr
