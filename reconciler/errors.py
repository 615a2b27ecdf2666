"""The reconciler's own exceptions, all of them, in one tree. Their class decides what happens next.

::

    ReconcilerError                       a command prints it and exits 1
    +-- InvalidDesiredState               the commit is wrong (its file:line issues): the pass
    |                                     stalls until a new commit; nothing running is touched
    +-- UnverifiedCommit                  not signed by an allowed key: stalls the same way
    +-- Unavailable                       git, Docker or S3 unreachable: retried with backoff,
    |   |                                 never read as "nothing exists"
    |   +-- SourceUnavailable, EngineUnavailable
    |   +-- BranchNotFound, CommitNotFound
    |   +-- StoreUnavailable (also a StoreError)
    +-- Conflict                          something we do not own is in the way; says how out
    +-- ImageUnavailable                  an image can be neither found, pulled nor built
    +-- ApplyError                        a change failed part way; carries what was done
    +-- AfterApplyFailed                  a step after the apply failed (a restore request);
    |                                     the apply stands
    +-- StateError, StateCorrupt          the state folder cannot be written / a file does not parse
    +-- SettingsError, KeyFileError       the environment or a key file is wrong
    +-- EngineError, StackError, VolumeArchiveError, DatabaseError
    +-- StoreError                        the object store refused (``reason`` says which fault)
    |   +-- ObjectNotFound, StoreUnavailable
    +-- ResticError                       restic failed
    |   +-- RepositoryNotFound, WrongKey, IntegrityError
    +-- BackupError                       a backup failed; nothing is reported as good
    |   +-- BackupBusy                    another backup holds the lock
    +-- VerifyError                       a backup does not read back whole
    |   +-- NoRoom                        the spool has no room for what a restore reads
    +-- BackupKeyMissing, BackupKeyRefused, ResticBackupError
    +-- ArchiveRefused, DumpRefused       what a backup holds would be unsafe to write back
    +-- RestoreFailed                     a restore failed; says whether anything was touched
    +-- NoStagingRoom                     no room on the engine's disk to stage a volume
    +-- DrillFailed                       the restore drill found a backup that does not restore

    Exception
    +-- LedgerUnreadable                  the restore ledger does not parse: no request runs
    +-- DaemonGone                        a daemon took a sync and closed without an answer

Parsing helpers keep their own ``ValueError``s inside the model and the
deciding parts (``YamlError``, ``InterpolationError``, ``SopsError``,
``RestorePlanError``, ``ForgeUnknown``), and a module may keep a private one
(``_ArchiveFailed``, ``_StepError``): each is turned into an ``Issue`` or one
of the above before it leaves its module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Issue:
    """One problem in the desired state, printed as ``PATH:LINE: KEY: message``.

    ``path`` is relative to the repository root (``desired-state/compose.yaml``),
    ``key`` a dotted path inside the file (``services.web.image``), empty when
    the problem is the file as a whole.
    """

    path: str
    line: int
    key: str
    message: str

    def __post_init__(self) -> None:
        # A message may quote a value (a malformed port, a duration) that was
        # decrypted from the commit: mask it where every issue is made.
        from reconciler.redaction import redact_secrets

        object.__setattr__(self, "message", redact_secrets(self.message))

    def __str__(self) -> str:
        location = f"{self.path}:{self.line}" if self.line > 0 else self.path
        if self.key:
            return f"{location}: {self.key}: {self.message}"
        return f"{location}: {self.message}"


class ReconcilerError(Exception):
    """Base of every error the reconciler raises on purpose."""


class InvalidDesiredState(ReconcilerError):
    """The desired state does not validate; carries every issue found."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.path, i.line, i.key, i.message))
        super().__init__("\n".join(str(i) for i in self.issues))


class Unavailable(ReconcilerError):
    """A dependency (git remote, Docker engine, object store) cannot be reached now."""


class UnverifiedCommit(ReconcilerError):
    """The commit is not signed by an allowed key (or its signature cannot be checked).

    The message names the commit and why: ``commit 3f2a9c1d2e4b: not signed by
    an allowed key: no signature``.
    """


class ImageUnavailable(ReconcilerError):
    """An image can neither be found locally, pulled nor built."""


class Conflict(ReconcilerError):
    """An object the reconciler does not own blocks the plan."""


@dataclass
class ApplyError(ReconcilerError):
    """An apply failed part way: ``done`` lists what had been changed before."""

    message: str
    done: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.done:
            return f"{self.message} (nothing was changed)"
        return f"{self.message} (already done: {'; '.join(self.done)})"


# --- The state folder and the settings ---------------------------------------------------


class StateError(ReconcilerError):
    """The state folder cannot be written (full disk, read-only, permissions)."""


class StateCorrupt(ReconcilerError):
    """A state file read without fallback does not parse; it is left where it is."""

    def __init__(self, path: Path, error: str) -> None:
        self.path = path
        super().__init__(f"{path} does not parse ({error})")


class SettingsError(ReconcilerError):
    pass


class KeyFileError(ReconcilerError):
    """The key file cannot be made or read (``reconciler secrets ...``)."""


# --- Reaching the outside world (adapters/) ----------------------------------------------


class BranchNotFound(Unavailable):
    """The remote answered but has no such branch.

    An ``Unavailable``: the pass retries with backoff, since pushing the branch
    (or fixing ``RECONCILER_BRANCH``) fixes it without a restart.
    """


class CommitNotFound(Unavailable):
    """The commit asked for is not on the remote's branch (force-pushed away).

    An ``Unavailable``: the next poll's ``remote_head`` names the new head.
    """


class EngineError(ReconcilerError):
    """The engine answered but refused a change; the message names what and why."""


StoreFault = Literal[
    "unreachable",
    "connection-dropped",
    "server-error",
    "credentials",
    "missing-bucket",
    "not-found",
    "invalid-target",
    "too-large",
    "io",
]


class StoreError(ReconcilerError):
    """The object store refused or failed an operation; ``reason`` says which fault."""

    def __init__(self, message: str, *, reason: StoreFault) -> None:
        super().__init__(message)
        self.reason = reason


class StoreUnavailable(StoreError, Unavailable):
    """Transient: the store cannot be reached or keeps failing; try again later."""


class ObjectNotFound(StoreError):
    """The key does not exist (absent, not unreachable)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="not-found")


class ResticError(ReconcilerError):
    """restic failed in a way retrying will not fix; the message says which command and why."""


class RepositoryNotFound(ResticError):
    """No repository exists at the URL (absent, not unreachable)."""


class WrongKey(ResticError):
    """A repository exists at the URL and the key does not open it."""


class IntegrityError(ResticError):
    """``restic check`` found damage in the repository."""


class DatabaseError(ReconcilerError):
    """A dump or a load failed; the message names the container and the cause."""


class StackError(ReconcilerError):
    """A container or volume could not be handled; the message says which and why."""


class VolumeArchiveError(ReconcilerError):
    """A volume could not be read or written; the message says which and why."""


# --- Deploys (deploy/) and the daemon (daemon/) ------------------------------------------


class SourceUnavailable(Unavailable):
    """The git remote cannot be reached."""


class EngineUnavailable(Unavailable):
    """The Docker engine cannot be reached."""


class AfterApplyFailed(ReconcilerError):
    """An after-apply step failed (a restore request): the sync fails, the apply stands.

    ``done`` lists what the step did change (say, other requests that succeeded).
    """

    def __init__(self, message: str, *, done: list[str] | None = None) -> None:
        super().__init__(message)
        self.done = list(done or [])


class DaemonGone(Exception):
    """The daemon took the request and closed the connection without an answer."""


# --- Backups (backup/) -------------------------------------------------------------------


class BackupError(ReconcilerError):
    """A backup failed; the message says which artifact and why."""


class BackupBusy(BackupError):
    """Another backup holds the lock."""


class VerifyError(ReconcilerError):
    """A stored backup does not check out; the message names the artifact."""


class BackupKeyMissing(ReconcilerError):
    """``RECONCILER_BACKUP_KEY`` is not set; the message says where to put it."""


class BackupKeyRefused(ReconcilerError):
    """A key given to ``backup key add`` or ``remove`` that must not be used (why is said)."""


class ResticBackupError(ReconcilerError):
    """A part of a restic-format backup could not be written or read back."""


# --- Restores (restore/) and what they read (decide/) ------------------------------------


class ArchiveRefused(ReconcilerError):
    """A volume archive holds a member that must never reach the engine."""


class DumpRefused(ReconcilerError):
    """The dump holds something a restore must not run; nothing was loaded."""


class RestoreFailed(ReconcilerError):
    """A restore failed; ``done`` lists what had been changed, ``touched`` whether anything was."""

    def __init__(
        self,
        message: str,
        *,
        done: list[str],
        safety_copy: str | None,
        touched: bool,
        backup: str | None = None,
        put_back: str | None = None,
    ) -> None:
        self.message = message
        # After writing began: "ok" when the safety copy was put back, else why not.
        self.put_back = put_back
        self.done = list(done)
        self.safety_copy = safety_copy
        self.touched = touched
        self.backup = backup
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message
        if not self.touched:
            return f"{text} (nothing was overwritten)"
        if self.done:
            text += f" (already done: {'; '.join(self.done)})"
        if self.safety_copy and self.put_back is None:
            text += f"; the contents from before are in the safety copy {self.safety_copy}"
        return text


class NoRoom(VerifyError):
    """The spool folder cannot hold a verified copy of the artifacts; nothing was touched."""


class NoStagingRoom(ReconcilerError):
    """The engine's volume disk cannot hold the staged copy; nothing was touched."""


class LedgerUnreadable(Exception):
    """The ledger exists but does not parse; restores wait until someone looks."""


class DrillFailed(ReconcilerError):
    """The drill found the backup bad (or could not run); the message says which part."""
