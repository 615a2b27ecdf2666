"""What to notify, given what happened and what was last sent: pure, no I/O.

``reconciler/notifying.py`` turns a pass, a backup, a restore or a
drill into a ``Notice``; ``decide`` compares it with the record of what was
last sent for that kind and answers with the ``Message`` to send now (or
None) and the record to keep. The rule (docs/notifications.md):

- a failure is sent when it is new: the kind was not failing, or it fails
  differently (another commit, reason or message) than the failure last sent;
- the same failure again (the next pass, the next tick) is not sent again;
- the first success after a sent failure is sent once, as ``<kind>.recovered``;
- kinds whose every result is news (restores and drills: ``announce_success``)
  send each success as ``<kind>.succeeded`` instead.

Also pure, and here because commit statuses follow the same idea: which
commit status to set (``decide_commit_status``) and where the forge's API is
(``forge_of``, from the repository URL in its ssh, https and scp-like forms).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from reconciler.redaction import redact_url

Severity = Literal["info", "warning", "error"]
CommitState = Literal["pending", "success", "failure"]
Provider = Literal["github", "gitea", "bitbucket"]
PROVIDERS: tuple[Provider, ...] = ("github", "gitea", "bitbucket")

# How many commits' last status to remember: enough for a burst of pushes and
# a rollback to a recent one, small enough for a tiny state file.
COMMIT_STATUS_MEMORY = 50
# A daily backup is missed when no backup succeeded for this long (a day plus
# slack for the backup's own run time); backup_jobs.backup_report uses the same.
MISSED_BACKUP_AFTER = timedelta(hours=26)


@dataclass(frozen=True)
class Notice:
    """Something that happened, before deduplication."""

    kind: str  # pass | backup | backup_missed | restore | drill
    ok: bool
    message: str
    commit: str | None = None
    reason: str = ""  # e.g. a pass's result and reason: "stalled/ValidationFailed"
    details: dict[str, Any] = field(default_factory=dict)
    announce_success: bool = False
    # Tells this failure apart from the last one beyond commit, reason and
    # message (a restore's id: two restores failing alike are two events).
    identity: str = ""


@dataclass(frozen=True)
class Message:
    """What the channels send: the generic webhook's fields, minus project and time."""

    event: str  # "<kind>.failed", "<kind>.recovered", "<kind>.succeeded"
    severity: Severity
    message: str
    commit: str | None
    details: dict[str, Any]


def fingerprint(notice: Notice) -> str:
    """Equal for failures that are the same failure again."""
    text = "\0".join(
        (notice.kind, notice.commit or "", notice.reason, notice.identity, notice.message)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def decide(notice: Notice, last: dict[str, Any] | None) -> tuple[Message | None, dict[str, Any]]:
    """The message to send for ``notice`` (None: nothing) and the record to keep for its kind.

    ``last`` is the record kept after the last message sent for this kind
    (``{"failing": bool, "fingerprint": str, ...}``), None when none was sent.
    The caller keeps the new record only once a channel took the message.
    """
    was_failing = bool(last and last.get("failing"))
    record: dict[str, Any] = {
        "failing": not notice.ok,
        "fingerprint": fingerprint(notice),
        "commit": notice.commit,
    }
    if not notice.ok:
        if was_failing and last is not None and last.get("fingerprint") == record["fingerprint"]:
            return None, last
        severity: Severity = "warning" if notice.reason.startswith("unavailable") else "error"
        return _message(notice, "failed", severity), record
    if notice.announce_success:
        return _message(notice, "succeeded", "info"), record
    if was_failing:
        return _message(notice, "recovered", "info"), record
    return None, last or record


def _message(notice: Notice, outcome: str, severity: Severity) -> Message:
    return Message(
        event=f"{notice.kind}.{outcome}",
        severity=severity,
        message=notice.message,
        commit=notice.commit,
        details=dict(notice.details),
    )


# -- commit statuses ---------------------------------------------------------------------------


def commit_state_of(result: str) -> CommitState | None:
    """A pass's result as a commit status; None when it says nothing of the commit.

    ``unavailable`` (git or Docker unreachable) is about the VM, not the
    commit: the status stays where it was until a pass gets through.
    """
    if result == "succeeded":
        return "success"
    if result in {"failed", "stalled"}:
        return "failure"
    return None


def decide_commit_status(
    commit: str, state: CommitState, sent: dict[str, str]
) -> tuple[bool, dict[str, str]]:
    """Whether to set ``state`` on ``commit``, and the memory of states set to keep.

    ``sent`` maps a commit to the last state set on it (oldest first). A state
    is set once per change: success after success on the same commit is
    skipped; failure then success again (drift repaired) is sent.
    """
    if sent.get(commit) == state:
        return False, sent
    kept = {c: s for c, s in sent.items() if c != commit}
    kept[commit] = state
    while len(kept) > COMMIT_STATUS_MEMORY:
        del kept[next(iter(kept))]
    return True, kept


@dataclass(frozen=True)
class Forge:
    """Where to set commit statuses: the provider, its API base and the repository."""

    provider: Provider
    api: str  # base URL with the version prefix: https://api.github.com, .../api/v1, .../2.0
    owner: str  # GitHub/Gitea owner, Bitbucket workspace
    repo: str  # repository name (Bitbucket repo_slug)
    host: str


class ForgeUnknown(ValueError):
    """The repository URL names no forge we can guess; set provider and API explicitly."""


# ssh://git@host:2222/owner/repo.git, https://tok@host/owner/repo, git://host/owner/repo
_URL = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/]*@)?(?P<host>[^/:?#]+)(?::\d+)?/(?P<path>.*)$"
)
# git@host:owner/repo.git (scp-like)
_SCP = re.compile(r"^(?:[^@/]+@)?(?P<host>[^/:]+):(?P<path>(?!/).+)$")


def parse_repo(url: str) -> tuple[str, str, str]:
    """``(host, owner, repo)`` of a git URL; raises ForgeUnknown for a local path and the like.

    The owner and name are the last two path segments, so a forge served under
    a sub-path (``https://example.com/gitea/owner/repo.git``) still parses.
    """
    match = _URL.match(url) or _SCP.match(url)
    if not match:
        raise ForgeUnknown(
            f"{redact_url(url)} is not a remote URL (ssh, https or host:path): "
            "commit statuses need the forge's owner/name"
        )
    path = match.group("path").split("?")[0].split("#")[0].strip("/")
    path = path.removesuffix(".git")
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        raise ForgeUnknown(f"{redact_url(url)} has no owner/name path")
    return match.group("host").lower(), parts[-2], parts[-1]


def forge_of(repo_url: str, *, provider: str | None = None, api: str | None = None) -> Forge:
    """The forge of ``repo_url``: provider and API guessed from the host unless given.

    - github.com -> ``https://api.github.com``; another host named for GitHub
      (GitHub Enterprise) -> ``https://HOST/api/v3``;
    - bitbucket.org -> ``https://api.bitbucket.org/2.0``;
    - a host naming gitea, forgejo or codeberg -> ``https://HOST/api/v1``.
    """
    host, owner, name = parse_repo(repo_url)
    chosen = provider or _guess_provider(host)
    if chosen is None:
        raise ForgeUnknown(
            f"cannot tell which forge {host} is: set RECONCILER_COMMIT_STATUS_PROVIDER "
            "(github, gitea or bitbucket) and RECONCILER_COMMIT_STATUS_API"
        )
    if chosen not in PROVIDERS:
        raise ForgeUnknown(f"unknown commit status provider {chosen!r}: github, gitea or bitbucket")
    base = (api or _default_api(chosen, host)).rstrip("/")
    return Forge(provider=chosen, api=base, owner=owner, repo=name, host=host)


def _guess_provider(host: str) -> Provider | None:
    if "bitbucket" in host:
        return "bitbucket"
    if "github" in host:
        return "github"
    if any(word in host for word in ("gitea", "forgejo", "codeberg")):
        return "gitea"
    return None


def _default_api(provider: str, host: str) -> str:
    if provider == "github":
        return "https://api.github.com" if host == "github.com" else f"https://{host}/api/v3"
    if provider == "bitbucket":
        return "https://api.bitbucket.org/2.0" if host == "bitbucket.org" else f"https://{host}/2.0"
    return f"https://{host}/api/v1"


# -- backups -----------------------------------------------------------------------------------


def backup_missed(
    *, last_success: datetime | None, watching_since: datetime, now: datetime
) -> datetime | None:
    """The moment since which backups are missed, or None when they are not.

    Missed: a daily schedule is on and no backup succeeded in the last
    ``MISSED_BACKUP_AFTER``. With no success ever, the clock starts when the
    schedule was first seen (a fresh install is not "missed" at once).
    """
    since = last_success or watching_since
    return since if now - since > MISSED_BACKUP_AFTER else None
