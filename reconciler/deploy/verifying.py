"""The verify step of a pass: the head commit's signature, remembered between passes.

A pass runs every interval and the head rarely moves, so the verdict on a
commit is kept (in memory, for the daemon's life) with a token of the keys it
was checked against: the allowed-signers file's or the keyring's size and
modification time. Changing the keys (adding a developer, removing one)
changes the token, and the next pass checks again, so a commit refused for an
unknown key is applied once its key is added, without a new commit or a
restart. A check that could not run (no gpg, a timeout) is not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from reconciler.decide.verification import SignaturePolicy, Verification
from reconciler.logs import event
from reconciler.ports import SignedSource

# Verdicts kept: the head, the one before it, and a few force-pushed ones.
REMEMBERED = 16


def trust_token(policy: SignaturePolicy) -> str:
    """Changes whenever the keys a commit is checked against change."""
    if policy.mode == "ssh":
        paths = [policy.allowed_signers]
    else:
        home = policy.gpg_home or Path()
        # Not trustdb.gpg: gpg may rewrite it on any run, and trust plays no part.
        paths = [home / "pubring.kbx", home / "pubring.gpg"]
    parts = []
    for path in paths:
        if path is None:
            continue
        try:
            info = path.stat()
        except OSError:
            parts.append(f"{path}:-")
            continue
        parts.append(f"{path}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


class CommitVerifier:
    """``reconciler.ports.Verifier`` over a git source and the settings' policy."""

    def __init__(self, source: SignedSource, policy: SignaturePolicy) -> None:
        self.source = source
        self.policy = policy
        self.checks = 0  # verify-commit runs, for tests and logs
        self._verdicts: OrderedDict[tuple[str, str], Verification] = OrderedDict()

    def verify(self, commit: str) -> Verification:
        key = (commit, trust_token(self.policy))
        known = self._verdicts.get(key)
        if known is not None:
            self._verdicts.move_to_end(key)
            return known
        verdict = self.source.verify(commit, self.policy)
        self.checks += 1
        if verdict.ok:
            event("verify.ok", commit=commit, signer=verdict.signer, key=verdict.key)
        else:
            event(
                "verify.refused",
                level=40,
                commit=commit,
                refusal=verdict.refusal,
                message=verdict.describe(),
            )
        if verdict.ok or verdict.definite:
            self._verdicts[key] = verdict
            while len(self._verdicts) > REMEMBERED:
                self._verdicts.popitem(last=False)
        return verdict
