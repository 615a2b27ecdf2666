"""Signed commits against the real things: keys made by ssh-keygen and gpg, commits
signed by git, served by ``git daemon``, verified by ``GitSource.verify``; and passes
on the real engine that apply signed commits and refuse the others."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from reconciler import labels
from reconciler.adapters.docker_engine import DockerEngine
from reconciler.adapters.git_source import GitSource
from reconciler.applied import make_source
from reconciler.decide.verification import (
    NotVerified,
    SignaturePolicy,
    Verification,
    Verified,
)
from reconciler.deploy.passes import Reconciler
from reconciler.deploy.verifying import CommitVerifier
from reconciler.settings import load_settings
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.signing_keys import GpgKeys, SshSigner, forged_commit, signed_commit

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  app:
    image: reconciler-local/busybox:latest
    command: ["sleep", "100000"]
    environment: {{VERSION: "{version}"}}
    stop_grace_period: 1s
"""


def files(version: str) -> dict[str, str]:
    return {"desired-state/compose.yaml": COMPOSE.format(version=version)}


@pytest.fixture
def gpg_keys() -> Iterator[GpgKeys]:
    keys = GpgKeys.make()
    yield keys
    keys.close()


def refusal_of(verdict: Verification) -> str:
    return "verified" if verdict.ok else verdict.refusal


def source_of(remote: ServedRemote, tmp_path: Path) -> GitSource:
    return GitSource(remote.url, branch="main", cache_dir=tmp_path / "cache")


# -- the adapter's verdicts ----------------------------------------------------------


def test_ssh_verdicts(tmp_path: Path, git_daemon: ServedRemote, gpg_keys: GpgKeys) -> None:
    alice = SshSigner.make(tmp_path / "keys", "alice")
    mallory = SshSigner.make(tmp_path / "keys", "mallory")
    signers = tmp_path / "allowed_signers"
    signers.write_text(alice.allowed_line)
    policy = SignaturePolicy("ssh", allowed_signers=signers)
    source = source_of(git_daemon, tmp_path)
    repo = git_daemon.repo

    good = signed_commit(repo, files("1"), alice)
    assert source.verify(good, policy) == Verified(good, alice.email, alice.fingerprint)

    unsigned = signed_commit(repo, files("2"), None)
    assert source.verify(unsigned, policy) == NotVerified(unsigned, "unsigned", "no signature")

    other = signed_commit(repo, files("3"), mallory)
    verdict = source.verify(other, policy)
    assert isinstance(verdict, NotVerified)
    assert verdict.refusal == "unknown-key"
    assert (
        verdict.detail == f"key {mallory.fingerprint} is not in the allowed signers file {signers}"
    )

    # alice's signature over files she never signed.
    forged = forged_commit(repo, good, files("evil"))
    verdict = source.verify(forged, policy)
    assert refusal_of(verdict) == "bad-signature"

    gpg_signed = signed_commit(repo, files("4"), gpg_keys.generate("gpg@example.com"))
    verdict = source.verify(gpg_signed, policy)
    assert refusal_of(verdict) == "wrong-kind"

    # alice's key listed only until 2020: her new commit is not covered.
    signers.write_text(
        alice.allowed_line.replace('namespaces="git"', 'namespaces="git",valid-before="20200101"')
    )
    verdict = source.verify(good, policy)
    assert refusal_of(verdict) == "expired-key"


def test_gpg_verdicts(tmp_path: Path, git_daemon: ServedRemote, gpg_keys: GpgKeys) -> None:
    alice = gpg_keys.generate("alice@example.com")
    mallory = gpg_keys.generate("mallory@example.com")
    gone = gpg_keys.generate("gone@example.com")
    old = gpg_keys.generate("old@example.com", expired=True)
    home = gpg_keys.trusted_home(
        tmp_path / "trusted", "alice@example.com", "gone@example.com", "old@example.com"
    )
    gpg_keys.revoke("gone@example.com", home)
    policy = SignaturePolicy("gpg", gpg_home=home)
    source = source_of(git_daemon, tmp_path)
    repo = git_daemon.repo

    good = signed_commit(repo, files("1"), alice)
    assert source.verify(good, policy) == Verified(
        good, "Test <alice@example.com>", alice.fingerprint
    )

    ssh_signer = SshSigner.make(tmp_path / "keys", "ssh")
    cases: list[tuple[Callable[[], str], str, str]] = [
        (lambda: signed_commit(repo, files("2"), None), "unsigned", "no signature"),
        (
            lambda: signed_commit(repo, files("3"), mallory),
            "unknown-key",
            f"key {mallory.fingerprint} is not in the keyring {home}",
        ),
        (
            lambda: signed_commit(repo, files("4"), gone),
            "revoked-key",
            f"key {gone.fingerprint} (Test <gone@example.com>) is revoked",
        ),
        (
            lambda: signed_commit(repo, files("5"), old),
            "expired-key",
            f"key {old.fingerprint} (Test <old@example.com>) has expired",
        ),
        (
            lambda: signed_commit(repo, files("6"), ssh_signer),
            "wrong-kind",
            "it carries an SSH signature",
        ),
        # Last: it moves the branch off the commits above (a force-push).
        (lambda: forged_commit(repo, good, files("evil")), "bad-signature", "bad signature"),
    ]
    for make, refusal, detail in cases:
        verdict = source.verify(make(), policy)
        assert isinstance(verdict, NotVerified), (refusal, verdict)
        assert (verdict.refusal, verdict.detail[: len(detail)]) == (refusal, detail)


# -- passes on the real engine -----------------------------------------------------------


def test_only_commits_signed_by_an_allowed_key_are_applied(
    tmp_path: Path,
    git_daemon: ServedRemote,
    engine: DockerEngine,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
) -> None:
    alice = SshSigner.make(tmp_path / "keys", "alice")
    mallory = SshSigner.make(tmp_path / "keys", "mallory")
    signers = tmp_path / "allowed_signers"
    signers.write_text(alice.allowed_line)
    settings = load_settings(
        {
            "RECONCILER_REPO": git_daemon.url,
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_PROJECT": project_name,
            "RECONCILER_ENV_FILE": "/dev/null",
            "RECONCILER_VERIFY": "ssh",
            "RECONCILER_ALLOWED_SIGNERS": str(signers),
        }
    )
    assert settings.signature_policy is not None
    source = make_source(settings)
    verifier = CommitVerifier(source, settings.signature_policy)
    reconciler = Reconciler(
        settings, source=source, engine=engine, verifier=verifier, own_container=None
    )
    repo = git_daemon.repo

    def running_commit() -> str:
        container = docker_client.containers.get(f"{project_name}-app-1")
        return str(container.labels[labels.COMMIT])

    first = signed_commit(repo, files("1"), alice)
    assert reconciler.sync().ok
    assert running_commit() == first

    refused: list[tuple[Callable[[], str], str]] = [
        (lambda: signed_commit(repo, files("2"), None), "no signature"),
        (lambda: signed_commit(repo, files("3"), mallory), f"key {mallory.fingerprint} is not in"),
        (lambda: forged_commit(repo, first, files("4")), "bad signature"),
    ]
    for make, why in refused:
        commit = make()
        outcome = reconciler.sync()
        assert (outcome.result, outcome.reason) == ("stalled", "VerificationFailed")
        status = reconciler.store.load()
        assert status.applied_commit == first
        assert status.attempted_commit == commit
        assert status.last_error is not None
        assert status.last_error.startswith(
            f"commit {commit[:12]}: not signed by an allowed key: {why}"
        )
        assert running_commit() == first
        assert not (tmp_path / "state" / "git" / "checkouts" / commit).exists()

    # The refused head is not checked again on every pass.
    checks = verifier.checks
    assert reconciler.sync().reason == "VerificationFailed"
    assert verifier.checks == checks

    second = signed_commit(repo, files("5"), alice)
    assert reconciler.sync().ok
    assert running_commit() == second
    assert reconciler.store.load().applied_commit == second
