"""The channels that carry notifications out: webhooks, commit statuses, backup pings.

Each send is one HTTP request with a short timeout, tried at most twice
(again only after a connection error, a timeout or a 5xx). A channel that
fails returns False and logs ``notify.failed``; it never raises, so a chat
server that is down never fails a pass, a backup or a restore.

Secrets: webhook and ping URLs carry their secret in the path (Slack's
``/services/T/B/XXXX``), so a log names a channel by kind and host only, and
never quotes a ``requests`` exception (its text holds the URL). Tokens go in
headers only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from reconciler.decide.notifications import CommitState, Forge, Message
from reconciler.logs import event

# (connect, read) seconds: a slow receiver costs a pass at most ~2 x 5 s per channel.
TIMEOUT_S = (3.05, 5.0)
RETRY_PAUSE_S = 0.5
USER_AGENT = "reconciler-notify/1"
# GitHub caps a status description at 140 characters; the others take more,
# but a status line is a headline, the details go to the chat channels.
DESCRIPTION_MAX = 140
PING_BODY_MAX = 10_000


def where(url: str) -> str:
    """A URL reduced to what may be logged: scheme and host (the path may be the secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def send(
    method: str,
    url: str,
    *,
    channel: str,
    json_body: Any | None = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
) -> bool:
    """One request, retried once on a transient failure; True when the receiver took it."""
    http = session or requests
    all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    problem = ""
    for attempt in (1, 2):
        try:
            response = http.request(
                method, url, json=json_body, data=data, headers=all_headers, timeout=TIMEOUT_S
            )
        except requests.RequestException as exc:
            # The class only: the exception's text quotes the URL.
            problem = type(exc).__name__
        else:
            if response.status_code < 400:
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500:
                break  # a 4xx (bad token, gone webhook) will not heal on a retry
        if attempt == 1:
            time.sleep(RETRY_PAUSE_S)
    event("notify.failed", level=logging.WARNING, channel=channel, to=where(url), error=problem)
    return False


@dataclass(frozen=True)
class JsonWebhook:
    """POSTs the documented JSON object (docs/notifications.md) to any URL."""

    url: str
    name: str = "webhook"

    def deliver(self, message: Message, *, project: str | None, at: datetime) -> bool:
        payload = {
            "event": message.event,
            "severity": message.severity,
            "project": project,
            "commit": message.commit,
            "message": message.message,
            "time": at.astimezone(UTC).isoformat(timespec="seconds"),
            "details": message.details,
        }
        return send("POST", self.url, channel=self.name, json_body=payload)


_ICONS = {"error": ":red_circle:", "warning": ":warning:", "info": ":white_check_mark:"}


@dataclass(frozen=True)
class SlackWebhook:
    """Slack's incoming-webhook format, ``{"text": ...}``: Mattermost and Rocket.Chat take it."""

    url: str
    name: str = "slack"

    def deliver(self, message: Message, *, project: str | None, at: datetime) -> bool:
        return send(
            "POST", self.url, channel=self.name, json_body={"text": slack_text(message, project)}
        )


def slack_text(message: Message, project: str | None) -> str:
    head = f"{_ICONS[message.severity]} *{project or 'reconciler'}*: {message.event}"
    if message.commit:
        head += f" at `{message.commit[:12]}`"
    body = message.message.strip()
    if len(body) > 3000:
        body = body[:3000] + " ..."
    return f"{head}\n{body}" if body else head


_BITBUCKET_STATES = {"pending": "INPROGRESS", "success": "SUCCESSFUL", "failure": "FAILED"}


@dataclass(frozen=True)
class CommitStatusClient:
    """Sets a commit's status on GitHub, Gitea or Bitbucket Cloud."""

    forge: Forge
    token: str
    context: str = "reconciler"

    def set(self, commit: str, state: CommitState, description: str) -> bool:
        url, body = self.request(commit, state, description)
        return send(
            "POST",
            url,
            channel=f"commit-status/{self.forge.provider}",
            json_body=body,
            headers=self.headers(),
        )

    def request(
        self, commit: str, state: CommitState, description: str
    ) -> tuple[str, dict[str, str]]:
        """The URL and JSON body of the provider's create-status call."""
        forge = self.forge
        text = description if len(description) <= DESCRIPTION_MAX else description[:137] + "..."
        if forge.provider == "bitbucket":
            url = (
                f"{forge.api}/repositories/{forge.owner}/{forge.repo}"
                f"/commit/{commit}/statuses/build"
            )
            # Bitbucket requires a url: the commit's page is the best we have.
            page = f"https://{forge.host}/{forge.owner}/{forge.repo}/commits/{commit}"
            return url, {
                "key": self.context,
                "state": _BITBUCKET_STATES[state],
                "name": self.context,
                "url": page,
                "description": text,
            }
        # GitHub and Gitea share the path (below their API base) and the body.
        url = f"{forge.api}/repos/{forge.owner}/{forge.repo}/statuses/{commit}"
        return url, {"state": state, "context": self.context, "description": text}

    def headers(self) -> dict[str, str]:
        forge = self.forge
        if forge.provider == "github":
            return {
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        if forge.provider == "gitea":
            return {"Authorization": f"token {self.token}", "Accept": "application/json"}
        if ":" in self.token:
            # ``user:app-password`` (Bitbucket app passwords use basic auth).
            import base64

            basic = base64.b64encode(self.token.encode()).decode()
            return {"Authorization": f"Basic {basic}", "Accept": "application/json"}
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}


@dataclass(frozen=True)
class BackupPing:
    """A healthchecks.io-style check: ``URL/start``, ``URL`` on success, ``URL/fail``."""

    url: str

    def start(self) -> bool:
        return self._ping("/start", "")

    def success(self, body: str) -> bool:
        return self._ping("", body)

    def fail(self, body: str) -> bool:
        return self._ping("/fail", body)

    def _ping(self, suffix: str, body: str) -> bool:
        base = self.url.rstrip("/")
        query = ""
        if "?" in base:  # keep a query (``?create=1``, ``?rid=``) after the suffix
            base, query = base.split("?", 1)
            query = "?" + query
        return send(
            "POST",
            f"{base}{suffix}{query}",
            channel="backup-ping",
            data=body[:PING_BODY_MAX].encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
