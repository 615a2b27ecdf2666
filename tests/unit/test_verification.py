"""Commit verification, the deciding half: git's answers (recorded from git 2.39,
ssh-keygen 9.2 and gpg 2.2) read into verdicts; the settings that turn it on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.decide.verification import (
    NotVerified,
    SignaturePolicy,
    Verified,
    judge,
    signature_kind,
)
from reconciler.errors import SettingsError
from reconciler.settings import load_settings

COMMIT = "3f2a9c1d2e4b" + "0" * 28
SSH = SignaturePolicy("ssh", allowed_signers=Path("/etc/reconciler/allowed_signers"))
GPG = SignaturePolicy("gpg", gpg_home=Path("/etc/reconciler/gnupg"))


def commit_object(armor: str | None) -> str:
    head = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> 1 +0000\n"
    head += "committer A <a@x> 1 +0000\n"
    if armor:
        head += f"gpgsig {armor}\n AAAA\n -----END SIGNATURE-----\n"
    return head + "\nmessage\n\ngpgsig -----BEGIN SSH SIGNATURE----- (in the message: ignored)\n"


SSH_SIGNED = commit_object("-----BEGIN SSH SIGNATURE-----")
GPG_SIGNED = commit_object("-----BEGIN PGP SIGNATURE-----")
KEY = "SHA256:HQZbLGwKGoyCTUb2aH/+qqT3JaGU2vdQuHC2F0v7ZrU"
FPR = "F871D3A24D7CF0867A322A841E8E75E73A015284"


def test_signature_kind_reads_only_the_header() -> None:
    assert signature_kind(SSH_SIGNED) == "ssh"
    assert signature_kind(GPG_SIGNED) == "gpg"
    assert signature_kind(commit_object("-----BEGIN SIGNED MESSAGE-----")) == "x509"
    assert signature_kind(commit_object(None)) is None


def test_an_unsigned_commit_says_no_signature() -> None:
    verdict = judge(SSH, commit=COMMIT, commit_object=commit_object(None), returncode=1, output="")
    assert verdict == NotVerified(COMMIT, "unsigned", "no signature")
    assert verdict.describe() == "commit 3f2a9c1d2e4b: not signed by an allowed key: no signature"


@pytest.mark.parametrize(
    ("policy", "signed", "says"),
    [
        (SSH, GPG_SIGNED, "a GPG signature, but RECONCILER_VERIFY=ssh accepts an SSH"),
        (GPG, SSH_SIGNED, "an SSH signature, but RECONCILER_VERIFY=gpg accepts a GPG"),
    ],
)
def test_a_signature_of_the_other_kind_is_refused_even_when_git_accepts_it(
    policy: SignaturePolicy, signed: str, says: str
) -> None:
    verdict = judge(policy, commit=COMMIT, commit_object=signed, returncode=0, output="")
    assert isinstance(verdict, NotVerified)
    assert verdict.refusal == "wrong-kind"
    assert says in verdict.detail


SSH_CASES = [
    (0, f'Good "git" signature for alice@example.com with ED25519 key {KEY}\n', None),
    (
        1,
        f'Good "git" signature with ED25519 key {KEY}\nNo principal matched.\n',
        ("unknown-key", f"key {KEY} is not in the allowed signers file"),
    ),
    (
        1,
        "Could not verify signature.\nSignature verification failed: incorrect signature\n",
        ("bad-signature", "bad signature (the commit was changed after it was signed"),
    ),
    (
        1,
        f'Good "git" signature with ED25519 key {KEY}\n/etc/reconciler/allowed_signers:1: '
        "key has expired: verify time 2026-11-28T03:22:40 > valid-before 2020-01-01T00:00:00\n"
        "No principal matched.\n",
        ("expired-key", f"key {KEY} is not valid at the commit's time"),
    ),
    (
        1,
        "error: cannot run ssh-keygen: No such file or directory\n",
        ("error", "git verify-commit failed: error: cannot run ssh-keygen"),
    ),
]


@pytest.mark.parametrize(("returncode", "output", "refused"), SSH_CASES)
def test_ssh_answers(returncode: int, output: str, refused: tuple[str, str] | None) -> None:
    verdict = judge(
        SSH, commit=COMMIT, commit_object=SSH_SIGNED, returncode=returncode, output=output
    )
    if refused is None:
        assert verdict == Verified(COMMIT, signer="alice@example.com", key=KEY)
        assert verdict.describe() == f"commit 3f2a9c1d2e4b: signed by alice@example.com (key {KEY})"
        return
    assert isinstance(verdict, NotVerified)
    assert (verdict.refusal, verdict.detail[: len(refused[1])]) == refused
    assert verdict.definite == (refused[0] != "error")


GOOD_GPG = f"""\
[GNUPG:] NEWSIG alice@example.com
[GNUPG:] KEY_CONSIDERED {FPR} 0
[GNUPG:] SIG_ID bdAUW87qNHIfHghEsON+Wz70enM 2026-11-28 1795836188
[GNUPG:] GOODSIG 1E8E75E73A015284 Alice <alice@example.com>
[GNUPG:] VALIDSIG {FPR} 2026-11-28 1795836188 0 4 0 22 8 00 {FPR}
[GNUPG:] TRUST_UNDEFINED 0 pgp
"""
GPG_CASES = [
    (0, GOOD_GPG, None),
    (
        1,
        "[GNUPG:] NEWSIG m@example.com\n[GNUPG:] ERRSIG 652817064AB3A466 22 8 00 1795836188 9 "
        "961F1DA57F1CC48ABC138F07652817064AB3A466\n[GNUPG:] NO_PUBKEY 652817064AB3A466\n",
        (
            "unknown-key",
            "key 961F1DA57F1CC48ABC138F07652817064AB3A466 is not in the keyring "
            "/etc/reconciler/gnupg",
        ),
    ),
    (
        1,
        GOOD_GPG.replace("GOODSIG", "REVKEYSIG") + "[GNUPG:] KEYREVOKED\n",
        ("revoked-key", f"key {FPR} (Alice <alice@example.com>) is revoked"),
    ),
    (
        1,
        GOOD_GPG.replace("GOODSIG", "EXPKEYSIG"),
        ("expired-key", f"key {FPR} (Alice <alice@example.com>) has expired"),
    ),
    (
        1,
        "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG 1E8E75E73A015284 Alice <alice@example.com>\n",
        ("bad-signature", "bad signature"),
    ),
    (1, "error: cannot run gpg: No such file or directory\n", ("error", "git verify-commit")),
]


@pytest.mark.parametrize(("returncode", "output", "refused"), GPG_CASES)
def test_gpg_answers(returncode: int, output: str, refused: tuple[str, str] | None) -> None:
    verdict = judge(
        GPG, commit=COMMIT, commit_object=GPG_SIGNED, returncode=returncode, output=output
    )
    if refused is None:
        assert verdict == Verified(COMMIT, signer="Alice <alice@example.com>", key=FPR)
        return
    assert isinstance(verdict, NotVerified)
    assert (verdict.refusal, verdict.detail[: len(refused[1])]) == refused


def test_git_refusing_a_good_looking_signature_is_never_a_pass() -> None:
    # A GOODSIG that git still refused (a trust level, say): git has the last word.
    verdict = judge(GPG, commit=COMMIT, commit_object=GPG_SIGNED, returncode=1, output=GOOD_GPG)
    assert not verdict.ok


# -- settings ---------------------------------------------------------------------


def settings_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "RECONCILER_REPO": "git://example.invalid/x",
        "RECONCILER_STATE_DIR": str(tmp_path / "state"),
        "RECONCILER_ENV_FILE": "/dev/null",
        **extra,
    }


def test_verification_is_off_by_default(tmp_path: Path) -> None:
    settings = load_settings(settings_env(tmp_path))
    assert settings.verify == "off"
    assert settings.signature_policy is None


def test_ssh_mode_needs_an_allowed_signers_file_with_a_key(tmp_path: Path) -> None:
    signers = tmp_path / "allowed_signers"
    env = settings_env(tmp_path, RECONCILER_VERIFY="ssh", RECONCILER_ALLOWED_SIGNERS=str(signers))
    with pytest.raises(SettingsError, match=f"needs the allowed signers file {signers}"):
        load_settings(env)
    signers.write_text("# nobody yet\n")
    with pytest.raises(SettingsError, match="lists no key"):
        load_settings(env)
    signers.write_text('alice@example.com namespaces="git" ssh-ed25519 AAAA\n')
    assert load_settings(env).signature_policy == SignaturePolicy(
        "ssh", allowed_signers=signers, gpg_home=Path("/etc/reconciler/gnupg")
    )


def test_gpg_mode_needs_a_keyring(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    env = settings_env(tmp_path, RECONCILER_VERIFY="gpg", RECONCILER_GPG_HOME=str(home))
    with pytest.raises(SettingsError, match=f"GnuPG home with the trusted public keys at {home}"):
        load_settings(env)
    home.mkdir()
    (home / "pubring.kbx").write_bytes(b"\0")
    assert load_settings(env).verify == "gpg"


def test_an_unknown_mode_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RECONCILER_VERIFY: Input should be 'off', 'ssh'"):
        load_settings(settings_env(tmp_path, RECONCILER_VERIFY="yes"))


def test_the_deciding_half_runs_nothing() -> None:
    code = (
        "import sys, reconciler.decide.verification\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'subprocess', 'docker', 'boto3', 'git'} or m.startswith('reconciler.adapters'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
