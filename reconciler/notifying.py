"""Notifications glued to the pass, backups, restores and drills.

- ``pass_listener(settings)``: a ``PassListener``; a failed, stalled or
  unavailable pass (and its recovery) goes to the chat webhooks, and the
  commit's status to the forge (success, failure);
- ``pending_hook(settings)``: a ``BeforeApply`` step; ``pending`` on a new
  commit as its apply starts;
- ``backup_started``, ``backup_finished``, ``check_missed_backup``,
  ``restore_finished``, ``drill_finished``: called by that code with its result.

What was last sent is kept in ``notifications.json`` in the state folder, so
deduplication (decide/notifications.py) holds across passes and restarts; it is
written only when a channel took the message, so a receiver that was down
gets it on the next try. Nothing here raises: a notification is never the
reason a pass, a backup or a restore fails.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.adapters.notifiers import (
    DESCRIPTION_MAX,
    BackupPing,
    CommitStatusClient,
    JsonWebhook,
    SlackWebhook,
)
from reconciler.decide.actions import Plan, describe, summarize
from reconciler.decide.notifications import (
    CommitState,
    ForgeUnknown,
    Message,
    Notice,
    backup_missed,
    commit_state_of,
    decide,
    decide_commit_status,
    forge_of,
)
from reconciler.deploy.passes import BeforeApply, PassListener, PassOutcome
from reconciler.errors import StateError
from reconciler.logs import event
from reconciler.redaction import redact_text
from reconciler.settings import Settings
from reconciler.state import names
from reconciler.state.files import atomic_write_json, exclusive_lock, read_json
from reconciler.state.status import StatusStore

STATE_FILE = names.NOTIFICATIONS
LOCK_FILE = names.NOTIFICATIONS_LOCK
LOCK_WAIT_S = 10.0
Clock = Callable[[], datetime]
_WARNED: set[str] = set()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Notifier:
    """The channels the settings turn on, and the record of what they were sent."""

    settings: Settings
    clock: Clock = _utcnow
    messages: list[JsonWebhook | SlackWebhook] = field(default_factory=list)
    commit_status: CommitStatusClient | None = None
    ping: BackupPing | None = None
    # Records sent but not yet written to the state file (it could not be).
    _unsaved: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"last": {}, "commit_status": {}}
    )

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = _utcnow) -> Notifier:
        notifier = cls(settings, clock)
        if settings.notify_webhook_url:
            notifier.messages.append(JsonWebhook(settings.notify_webhook_url))
        if settings.notify_slack_url:
            notifier.messages.append(SlackWebhook(settings.notify_slack_url))
        if settings.backup_ping_url:
            notifier.ping = BackupPing(settings.backup_ping_url)
        if settings.commit_status_token:
            try:
                forge = forge_of(
                    settings.repo,
                    provider=settings.commit_status_provider,
                    api=settings.commit_status_api,
                )
            except ForgeUnknown as exc:
                if str(exc) not in _WARNED:  # once per process, not per backup or restore
                    _WARNED.add(str(exc))
                    event("notify.commit_status_off", level=logging.WARNING, error=str(exc))
            else:
                context = f"reconciler/{settings.project}" if settings.project else "reconciler"
                notifier.commit_status = CommitStatusClient(
                    forge, settings.commit_status_token, context
                )
        return notifier

    # -- messages to the chat webhooks ---------------------------------------------------------

    def notify(self, notice: Notice) -> Message | None:
        """Send ``notice`` if it is news (see decide/notifications.py); return what was sent."""
        if not self.messages:
            return None
        notice = _redacted(notice)
        with self._held():
            state = self._load()
            message, record = decide(notice, state["last"].get(notice.kind))
            if message is None:
                return None
            if not self._deliver(message):
                return None  # nothing recorded: the next pass or tick tries again
            state["last"][notice.kind] = {
                **record,
                "event": message.event,
                "time": self.clock().isoformat(),
            }
            self._save(state, "last", notice.kind)
            return message

    def _deliver(self, message: Message) -> bool:
        project = self.settings.project or _stored_project(self.settings)
        at = self.clock()
        delivered = [channel.deliver(message, project=project, at=at) for channel in self.messages]
        if any(delivered):
            event(
                "notify.sent", notice=message.event, commit=message.commit, channels=sum(delivered)
            )
        return any(delivered)

    # -- commit statuses ------------------------------------------------------------------------

    def set_commit_status(self, commit: str, state: CommitState, description: str) -> bool:
        """Set ``state`` on ``commit`` once per change (pending, success, failure)."""
        client = self.commit_status
        if client is None:
            return False
        with self._held():
            stored = self._load()
            send, memory = decide_commit_status(commit, state, stored["commit_status"])
            if not send:
                return False
            if not client.set(commit, state, redact_text(description)):
                return False
            stored["commit_status"] = memory
            self._save(stored, "commit_status", commit)
        event("notify.commit_status", commit=commit, state=state, provider=client.forge.provider)
        return True

    # -- the state file -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """The notification lock, when it can be had: a full or broken state folder is
        itself worth a message, so without the lock the notice still goes out."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(
                    exclusive_lock(
                        self.settings.state_dir / LOCK_FILE, wait_s=LOCK_WAIT_S, what="notification"
                    )
                )
            except (StateError, OSError) as exc:
                event("notify.unlocked", level=logging.WARNING, error=str(exc))
            yield

    def _load(self) -> dict[str, Any]:
        """The record on disk, with what this process could not write over it."""
        raw = read_json(self.settings.state_dir / STATE_FILE)
        data = raw if isinstance(raw, dict) else {}
        state: dict[str, Any] = {}
        for section in ("last", "commit_status"):
            stored = data.get(section)
            state[section] = {
                **(stored if isinstance(stored, dict) else {}),
                **self._unsaved[section],
            }
        return state

    def _save(self, state: dict[str, Any], section: str, key: str) -> None:
        try:
            atomic_write_json(self.settings.state_dir / STATE_FILE, state)
        except (StateError, OSError) as exc:
            # Kept in memory: a state folder that is full does not turn every
            # pass into a message; the file gets it with the next message written.
            self._unsaved[section][key] = state[section][key]
            event("notify.state_failed", level=logging.WARNING, error=str(exc))
        else:
            self._unsaved = {"last": {}, "commit_status": {}}


def _redacted(notice: Notice) -> Notice:
    details = {k: redact_text(v) if isinstance(v, str) else v for k, v in notice.details.items()}
    return Notice(
        kind=notice.kind,
        ok=notice.ok,
        message=redact_text(notice.message),
        commit=notice.commit,
        reason=notice.reason,
        details=details,
        announce_success=notice.announce_success,
        identity=notice.identity,
    )


def _stored_project(settings: Settings) -> str | None:
    try:
        return StatusStore(settings.state_dir).load().project
    except Exception:  # a status that does not load leaves the project out, nothing more
        return None


def _quietly(what: str, action: Callable[[], object]) -> None:
    """Run ``action``; a bug in a notifier is logged, never raised into the caller."""
    try:
        action()
    except Exception as exc:
        event("notify.crashed", level=logging.ERROR, notice=what, error=repr(exc), exc_info=True)


# -- the pass ----------------------------------------------------------------------


def pass_listener(settings: Settings, *, notifier: Notifier | None = None) -> PassListener:
    """Tell the chat webhooks of failed passes and recoveries, the forge of the commit's state."""
    chosen = notifier or Notifier.from_settings(settings)

    def notify_pass(outcome: PassOutcome, duration_s: float) -> None:
        _quietly("pass", lambda: pass_finished(chosen, outcome, duration_s))

    return notify_pass


def pass_finished(notifier: Notifier, outcome: PassOutcome, duration_s: float) -> None:
    commit = outcome.commit
    if outcome.ok:
        text = f"the pass succeeded again ({len(outcome.changes)} changes)"
    else:
        text = outcome.message or f"the pass {outcome.result}: {outcome.reason}"
    notifier.notify(
        Notice(
            kind="pass",
            ok=outcome.ok,
            message=text,
            commit=commit,
            reason=f"{outcome.result}/{outcome.reason}",
            details={
                "result": outcome.result,
                "reason": outcome.reason,
                "changes": outcome.changes[:20],
                # What the pass set out to do, each with its reason (names, never values).
                "plan": [redact_text(describe(a)) for a in outcome.plan.actions[:20]]
                if outcome.plan
                else [],
                "duration_s": round(duration_s, 3),
            },
        )
    )
    state = commit_state_of(outcome.result)
    if commit and state:
        description = "applied" if state == "success" else f"{outcome.reason}: {outcome.message}"
        notifier.set_commit_status(
            commit, state, description.splitlines()[0] if description else ""
        )


def pending_hook(settings: Settings, *, notifier: Notifier | None = None) -> BeforeApply:
    """``pending`` on a commit as the pass starts applying it (not when re-applying the same),
    described by the plan: ``2 to recreate: web (web.env), db (image)``."""
    chosen = notifier or Notifier.from_settings(settings)

    def commit_pending(commit: str, applied: str | None, plan: Plan) -> None:
        if commit != applied:
            description = summarize(plan, limit=DESCRIPTION_MAX)
            _quietly("pending", lambda: chosen.set_commit_status(commit, "pending", description))

    return commit_pending


# -- backups, restores, drills ---------------------------------------------------------------


def backup_started(settings: Settings) -> None:
    notifier = Notifier.from_settings(settings)
    if notifier.ping is not None:
        _quietly("backup.start", notifier.ping.start)


def backup_finished(
    settings: Settings,
    *,
    ok: bool,
    message: str,
    commit: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """A backup's result: the ping (every time), the chat webhooks (when news)."""
    notifier = Notifier.from_settings(settings)
    text = redact_text(message)

    def tell() -> None:
        if notifier.ping is not None:
            (notifier.ping.success if ok else notifier.ping.fail)(text)
        notifier.notify(
            Notice(kind="backup", ok=ok, message=text, commit=commit, details=details or {})
        )
        if ok:  # a missed-backup warning, if one was sent, is over
            notifier.notify(
                Notice(
                    kind="backup_missed", ok=True, message="a backup succeeded again", commit=commit
                )
            )

    _quietly("backup", tell)


def check_missed_backup(
    settings: Settings,
    *,
    last_success: datetime | None,
    watching_since: datetime,
    now: datetime,
    notifier: Notifier | None = None,
) -> None:
    """Warn once when the daily schedule passed without a good backup (cheap: call every tick)."""
    chosen = notifier or Notifier.from_settings(settings)
    if not chosen.messages:
        return
    since = backup_missed(last_success=last_success, watching_since=watching_since, now=now)
    if since is None:
        return
    moment = since.isoformat(timespec="minutes")
    text = (
        f"no backup has succeeded since {moment}"
        if last_success
        else f"no backup has succeeded yet (schedule on since {moment})"
    )
    _quietly(
        "backup_missed",
        lambda: chosen.notify(
            Notice(
                kind="backup_missed",
                ok=False,
                message=text,
                details={"last_success": last_success.isoformat() if last_success else None},
            )
        ),
    )


def restore_finished(
    settings: Settings,
    *,
    ident: str,
    ok: bool,
    summary: str,
    commit: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Every restore's result is news: sent each time, success or failure."""
    notice = Notice(
        kind="restore",
        ok=ok,
        message=summary,
        commit=commit,
        identity=ident,
        announce_success=True,
        details={"id": ident, **(details or {})},
    )
    _quietly("restore", lambda: Notifier.from_settings(settings).notify(notice))


def drill_finished(settings: Settings, result: dict[str, Any], *, commit: str | None) -> None:
    """A drill's result: each success, and each new failure (a failure repeated is sent once)."""
    ok = result.get("result") == "ok"
    backup = result.get("backup")
    text = (
        f"restore drill of backup {backup} succeeded"
        if ok
        else f"restore drill of backup {backup or '?'} failed: {result.get('error')}"
    )
    notice = Notice(
        kind="drill",
        ok=ok,
        message=text,
        commit=commit,
        announce_success=True,
        details={"backup": backup, "duration_s": result.get("duration_s")},
    )
    _quietly("drill", lambda: Notifier.from_settings(settings).notify(notice))
