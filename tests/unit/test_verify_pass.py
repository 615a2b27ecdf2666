"""The verify step in a pass, over in-memory seams: a refused head changes nothing,
runs no after-apply hook, stalls with VerificationFailed; verdicts are remembered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.decide.verification import NotVerified, SignaturePolicy, Verification, Verified
from reconciler.deploy.passes import Reconciler
from reconciler.deploy.verifying import CommitVerifier
from reconciler.model.desired import DesiredState
from reconciler.ports import Checkout
from reconciler.settings import load_settings
from reconciler.state.status import Status
from tests.fixtures.fake_engine import FakeEngine
from tests.unit.test_passes import GOOD, FakeSource, sha


class FakeVerifier:
    def __init__(self) -> None:
        self.signed: set[str] = set()
        self.asked: list[str] = []

    def verify(self, commit: str) -> Verification:
        self.asked.append(commit)
        if commit in self.signed:
            return Verified(commit, signer="alice@example.com", key="SHA256:abc")
        return NotVerified(commit, "unsigned", "no signature")


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Reconciler, FakeSource, FakeEngine, FakeVerifier, list[str]]:
    settings = load_settings(
        {
            "RECONCILER_REPO": "git://example.invalid/x",
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_PROJECT": "shop",
            "RECONCILER_ENV_FILE": "/dev/null",
        }
    )
    source = FakeSource(tmp_path / "commits")
    engine = FakeEngine()
    verifier = FakeVerifier()
    hook_ran: list[str] = []

    def restore_hook(checkout: Checkout, _desired: DesiredState, _status: Status) -> list[str]:
        hook_ran.append(checkout.commit)
        return []

    reconciler = Reconciler(
        settings,
        source=source,
        engine=engine,
        after_apply=[restore_hook],
        own_container=None,
        verifier=verifier,
    )
    return reconciler, source, engine, verifier, hook_ran


def test_an_unsigned_head_is_not_applied_and_the_signed_one_is_still_enforced(
    parts: tuple[Reconciler, FakeSource, FakeEngine, FakeVerifier, list[str]],
) -> None:
    reconciler, source, engine, verifier, hook_ran = parts
    verifier.signed.add(source.commit(sha(1), GOOD.replace("VERSION_VALUE", "1")))
    assert reconciler.sync().ok
    assert hook_ran == [sha(1)]
    web = engine.by_name("shop-web-1")
    assert web is not None
    del engine.containers[web.id]  # drift: removed by hand
    source.commit(sha(2), GOOD.replace("VERSION_VALUE", "2"))
    fetches = source.fetches

    outcome = reconciler.sync()

    assert (outcome.result, outcome.reason) == ("stalled", "VerificationFailed")
    expected = f"commit {sha(2)[:12]}: not signed by an allowed key: no signature"
    assert outcome.message == expected
    assert hook_ran == [sha(1)]  # no restore request of the refused commit
    assert source.fetches == fetches + 1  # the applied commit only: sha(2) never loaded
    recreated = engine.by_name("shop-web-1")
    assert recreated is not None  # the drift was repaired from the applied commit
    assert recreated.labels["dev.reconciler.commit"] == sha(1)
    status = reconciler.store.load()
    assert (status.applied_commit, status.attempted_commit) == (sha(1), sha(2))
    assert status.stalled_commit == sha(2)
    assert (status.reason, status.last_error, status.ready) == (
        "VerificationFailed",
        expected,
        False,
    )

    verifier.signed.add(source.commit(sha(3), GOOD.replace("VERSION_VALUE", "3")))
    assert reconciler.sync().ok
    assert reconciler.store.load().applied_commit == sha(3)
    assert hook_ran == [sha(1), sha(3)]


def test_plan_shows_the_refusal(
    parts: tuple[Reconciler, FakeSource, FakeEngine, FakeVerifier, list[str]],
) -> None:
    reconciler, source, engine, _verifier, _hook_ran = parts
    source.commit(sha(1), GOOD)

    outcome = reconciler.plan_only()

    assert (outcome.result, outcome.reason, outcome.plan) == ("stalled", "VerificationFailed", None)
    assert "not signed by an allowed key: no signature" in outcome.message
    assert engine.containers == {}


class CountingSource:
    def __init__(self) -> None:
        self.calls = 0
        self.answer: Verification = NotVerified(sha(1), "unknown-key", "key SHA256:x is not in")

    def verify(self, commit: str, policy: SignaturePolicy) -> Verification:
        self.calls += 1
        return self.answer


def test_a_verdict_is_kept_until_the_keys_change(tmp_path: Path) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text("bob ssh-ed25519 AAAA\n")
    source = CountingSource()
    verifier = CommitVerifier(source, SignaturePolicy("ssh", allowed_signers=signers))

    for _ in range(3):
        assert not verifier.verify(sha(1)).ok
    assert source.calls == 1

    # A developer's key is added: the same commit is checked again, and passes.
    signers.write_text("bob ssh-ed25519 AAAA\nalice ssh-ed25519 BBBB\n")
    os.utime(signers, ns=(1, 1))
    source.answer = Verified(sha(1), signer="alice", key="SHA256:y")
    assert verifier.verify(sha(1)).ok
    assert verifier.verify(sha(1)).ok
    assert source.calls == 2


def test_a_check_that_could_not_run_is_not_kept(tmp_path: Path) -> None:
    source = CountingSource()
    source.answer = NotVerified(sha(1), "error", "git verify-commit failed: cannot run gpg")
    verifier = CommitVerifier(source, SignaturePolicy("gpg", gpg_home=tmp_path))

    verifier.verify(sha(1))
    verifier.verify(sha(1))

    assert source.calls == 2
