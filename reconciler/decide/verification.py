"""Is a commit signed by an allowed key? The deciding half of commit verification.

The git adapter (``GitSource.verify``) runs ``git verify-commit --raw`` and
``git cat-file commit``; this module reads what they said and decides, without
running anything, so every case is a unit test.

What counts, like Flux's source-controller ``spec.verify`` (HEAD mode):

- only the commit the pass is about to apply (the branch head) is verified;
  its signer vouches for the whole tree, whatever earlier commits added;
- ssh: the key must be listed for the commit's committer time in the
  allowed-signers file (``ssh-keygen -Y verify``, namespace ``git``); a key
  with ``valid-before`` in the past is expired;
- gpg: any key in the keyring counts (the keyring *is* the list of trusted
  keys, so git's ``gpg.minTrustLevel`` is pinned to ``undefined``: no owner
  trust needs setting); an expired or revoked key does not;
- the signature must be of the configured kind: in ssh mode a GPG-signed
  commit is rejected, never checked against some other keyring, and the
  reverse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

VerifyMode = Literal["off", "ssh", "gpg"]
SignatureKind = Literal["ssh", "gpg", "x509"]
# Why a commit is not verified; "error" means the check itself could not run
# (a missing ssh-keygen or gpg, an unreadable keyring): not a property of the
# commit, so it is never remembered.
Refusal = Literal[
    "unsigned",
    "wrong-kind",
    "unknown-key",
    "bad-signature",
    "expired-key",
    "revoked-key",
    "expired-signature",
    "error",
]

_KIND_NAMES: dict[SignatureKind, str] = {"ssh": "an SSH", "gpg": "a GPG", "x509": "an X.509"}
_ARMOR: dict[str, SignatureKind] = {
    "-----BEGIN SSH SIGNATURE-----": "ssh",
    "-----BEGIN PGP SIGNATURE-----": "gpg",
    "-----BEGIN PGP MESSAGE-----": "gpg",
    "-----BEGIN SIGNED MESSAGE-----": "x509",
}
_SSH_GOOD = re.compile(
    r'Good "git" signature for (?P<principal>.+?) with (?P<algo>\S+) key (?P<key>SHA256:\S+)'
)
_SSH_KEY = re.compile(r"signature (?:for .+? )?with \S+ key (?P<key>SHA256:[A-Za-z0-9+/=]+)")
_GPG_STATUS = re.compile(r"^\[GNUPG:\] (?P<keyword>[A-Z_]+)(?: (?P<args>.*))?$", re.MULTILINE)


@dataclass(frozen=True)
class SignaturePolicy:
    """What to check a commit against (from settings; paths are not read here)."""

    mode: Literal["ssh", "gpg"]
    allowed_signers: Path | None = None  # ssh
    gpg_home: Path | None = None  # gpg

    @property
    def keys_place(self) -> str:
        if self.mode == "ssh":
            return f"the allowed signers file {self.allowed_signers}"
        return f"the keyring {self.gpg_home}"


@dataclass(frozen=True)
class Verified:
    commit: str
    signer: str  # the ssh principal, or the gpg user id
    key: str  # SHA256:... (ssh) or the primary key's fingerprint (gpg)

    @property
    def ok(self) -> Literal[True]:
        return True

    def describe(self) -> str:
        return f"commit {self.commit[:12]}: signed by {self.signer} (key {self.key})"


@dataclass(frozen=True)
class NotVerified:
    commit: str
    refusal: Refusal
    detail: str  # why, in words; names the key when there is one

    @property
    def ok(self) -> Literal[False]:
        return False

    @property
    def definite(self) -> bool:
        """A property of the commit and the keys, worth remembering (not a tool failure)."""
        return self.refusal != "error"

    def describe(self) -> str:
        if self.refusal == "error":
            return f"commit {self.commit[:12]}: could not verify its signature: {self.detail}"
        return f"commit {self.commit[:12]}: not signed by an allowed key: {self.detail}"


Verification = Verified | NotVerified


def signature_kind(commit_object: str) -> SignatureKind | None:
    """The kind of signature in a raw commit object (``git cat-file commit``), if any.

    The signature is the ``gpgsig`` (or ``gpgsig-sha256``) header, whose first
    line is the armour; headers end at the first empty line.
    """
    headers = commit_object.split("\n\n", 1)[0]
    for line in headers.splitlines():
        name, _, value = line.partition(" ")
        if name in ("gpgsig", "gpgsig-sha256"):
            return _ARMOR.get(value.strip(), "x509" if value.startswith("-----BEGIN") else None)
    return None


def judge(
    policy: SignaturePolicy,
    *,
    commit: str,
    commit_object: str,
    returncode: int,
    output: str,
) -> Verification:
    """Decide from what git said: ``returncode`` and ``output`` of ``verify-commit --raw``."""
    kind = signature_kind(commit_object)
    if kind is None:
        return NotVerified(commit, "unsigned", "no signature")
    if kind != policy.mode:
        return NotVerified(
            commit,
            "wrong-kind",
            f"it carries {_KIND_NAMES[kind]} signature, but RECONCILER_VERIFY={policy.mode} "
            f"accepts {_KIND_NAMES[policy.mode]} signature only",
        )
    if policy.mode == "ssh":
        return _judge_ssh(policy, commit, returncode, output)
    return _judge_gpg(policy, commit, returncode, output)


def _judge_ssh(policy: SignaturePolicy, commit: str, returncode: int, output: str) -> Verification:
    good = _SSH_GOOD.search(output)
    if returncode == 0:
        if good is None:  # git accepted it; the wording of the line changed
            return Verified(commit, signer="?", key="?")
        return Verified(commit, signer=good.group("principal"), key=good.group("key"))
    low = output.lower()
    key_match = _SSH_KEY.search(output)
    key = f"key {key_match.group('key')}" if key_match else "the key"
    if "incorrect signature" in low or "signature verification failed" in low:
        return NotVerified(commit, "bad-signature", _BAD)
    if "key has expired" in low or "not yet valid" in low:
        return NotVerified(
            commit,
            "expired-key",
            f"{key} is not valid at the commit's time in {policy.keys_place} "
            "(valid-after/valid-before)",
        )
    if "revoked" in low:
        return NotVerified(commit, "revoked-key", f"{key} is revoked")
    if "no principal matched" in low:
        return NotVerified(commit, "unknown-key", f"{key} is not in {policy.keys_place}")
    return NotVerified(commit, "error", _tool_said(output))


def _judge_gpg(policy: SignaturePolicy, commit: str, returncode: int, output: str) -> Verification:
    status: dict[str, str] = {}
    for match in _GPG_STATUS.finditer(output):
        status.setdefault(match.group("keyword"), match.group("args") or "")
    user = ""
    for keyword in ("GOODSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG", "BADSIG"):
        if keyword in status:
            user = status[keyword].partition(" ")[2]
            break
    # VALIDSIG's last field is the primary key's fingerprint (the one users list).
    fingerprint = status.get("VALIDSIG", "").split(" ")[-1]
    key = f"key {fingerprint or _long_id(status)}".rstrip()
    who = f" ({user})" if user else ""
    if returncode == 0 and "GOODSIG" in status:
        return Verified(commit, signer=user or "?", key=fingerprint or _long_id(status) or "?")
    if "BADSIG" in status:
        return NotVerified(commit, "bad-signature", _BAD)
    if "REVKEYSIG" in status:
        return NotVerified(commit, "revoked-key", f"{key}{who} is revoked")
    if "EXPKEYSIG" in status:
        return NotVerified(commit, "expired-key", f"{key}{who} has expired")
    if "EXPSIG" in status:
        return NotVerified(commit, "expired-signature", f"the signature by {key}{who} has expired")
    if "NO_PUBKEY" in status or "ERRSIG" in status:
        return NotVerified(commit, "unknown-key", f"{key} is not in {policy.keys_place}")
    if returncode == 0:  # git accepted it without a GOODSIG line: trust git, say so
        return Verified(commit, signer="?", key="?")
    return NotVerified(commit, "error", _tool_said(output))


_BAD = "bad signature (the commit was changed after it was signed, or the signature is forged)"


def _long_id(status: dict[str, str]) -> str:
    """The key id gpg names when it has no fingerprint to give (ERRSIG, NO_PUBKEY)."""
    errsig = status.get("ERRSIG", "").split(" ")
    # ERRSIG <keyid> <pkalgo> <hashalgo> <sig_class> <time> <rc> [<fpr>]
    if len(errsig) >= 7 and errsig[6]:
        return errsig[6]
    for keyword in ("ERRSIG", "NO_PUBKEY", "GOODSIG", "BADSIG", "EXPKEYSIG", "REVKEYSIG"):
        if status.get(keyword):
            return status[keyword].split(" ")[0]
    return ""


def _tool_said(output: str) -> str:
    said = " ".join(line.strip() for line in output.splitlines() if line.strip())
    return f"git verify-commit failed: {said[:300] or 'no output'}"
