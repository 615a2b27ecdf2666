"""The reconciler's own exceptions. Their class decides what a pass does next.

- ``InvalidDesiredState``: the commit is wrong; nothing runs is touched, the pass
  stalls until a new commit (Flux's "stalled").
- ``Unavailable``: git, Docker or S3 cannot be reached; retried with backoff,
  never read as "nothing exists".
- ``ApplyError``: a change failed part way; it carries what was already done.
- ``Conflict``: something we do not own is in the way; says how to resolve it.
- ``UnverifiedCommit``: verification is on and the commit is not signed by an
  allowed key; stalls like an invalid commit (nothing of it is applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
