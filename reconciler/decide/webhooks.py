"""Whether a push webhook starts a pass: pure, no I/O (the server is daemon/endpoints.py).

A delivery is judged in this order, and the body is parsed as JSON only once
its signature is good (``judge``):

1. size: a body over the limit is refused before anything else (``too_large``);
2. signature: HMAC-SHA256 of the raw body with the shared secret, compared in
   constant time. The header says which forge sent it:

   | forge | header | value |
   |---|---|---|
   | GitHub | ``X-Hub-Signature-256`` | ``sha256=<hex>`` |
   | Gitea (and Forgejo) | ``X-Gitea-Signature`` | ``<hex>`` |
   | Bitbucket (Server, Data Center, Cloud) | ``X-Hub-Signature`` | ``sha256=<hex>`` |

   None of them: ``unsigned`` (401); present but wrong, or another algorithm
   (GitHub's legacy ``X-Hub-Signature: sha1=...``): ``bad_signature`` (403);
3. replay: a delivery id (``X-GitHub-Delivery``, ``X-Gitea-Delivery``,
   ``X-Request-Id`` / ``X-Request-UUID``) or a body seen recently is
   ``stale`` (403). The forges sign neither a time nor the id, so the body's
   digest is remembered too: a captured delivery sent again under a new id is
   still refused while it is remembered. Past that memory a replay can at most
   start one pass, which changes nothing when nothing was pushed (passes are
   level-based);
4. event: a ping (sent when the hook is created) is answered ``ping``; any
   other event but a push is ``ignored``;
5. branch: a push of another branch (or a tag) is acknowledged as
   ``wrong_branch`` and starts nothing; a push of the followed branch is
   ``accepted`` and starts a pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Result = Literal[
    "accepted",
    "wrong_branch",
    "ping",
    "ignored",
    "unsigned",
    "bad_signature",
    "stale",
    "too_large",
    "bad_request",
]
RESULTS: tuple[Result, ...] = (
    "accepted",
    "wrong_branch",
    "ping",
    "ignored",
    "unsigned",
    "bad_signature",
    "stale",
    "too_large",
    "bad_request",
)
STATUS: dict[Result, int] = {
    "accepted": 202,
    "wrong_branch": 202,
    "ping": 200,
    "ignored": 202,
    "unsigned": 401,
    "bad_signature": 403,
    "stale": 403,
    "too_large": 413,
    "bad_request": 400,
}

# A push payload of a big merge is a few hundred KB; GitHub caps deliveries at 25 MB
# but truncates the commit list long before. 1 MiB holds any push we act on.
MAX_BODY_BYTES = 1024 * 1024
# Deliveries to remember for replay: days of pushes of a small team, a few KB of memory.
REMEMBERED_DELIVERIES = 1024

SIGNATURE_HEADERS = ("x-hub-signature-256", "x-gitea-signature", "x-hub-signature")
DELIVERY_HEADERS = ("x-github-delivery", "x-gitea-delivery", "x-request-id", "x-request-uuid")
EVENT_HEADERS = ("x-github-event", "x-gitea-event", "x-event-key")
PING_EVENTS = {"ping", "diagnostics:ping"}
PUSH_EVENTS = {"push", "repo:refs_changed", "repo:push"}


@dataclass(frozen=True)
class Verdict:
    """What to answer and whether to start a pass; ``message`` is safe to log and send."""

    result: Result
    message: str
    delivery: str | None = None
    ref: str | None = None

    @property
    def status(self) -> int:
        return STATUS[self.result]

    @property
    def starts_pass(self) -> bool:
        return self.result == "accepted"


def signature_of(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a forge sends for ``body``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_signature(headers: Mapping[str, str], body: bytes, secret: str) -> Verdict | None:
    """None when the body is signed with ``secret``; else the refusal."""
    for name in SIGNATURE_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        if name == "x-gitea-signature":
            given = value
        elif value.startswith("sha256="):
            given = value.removeprefix("sha256=")
        else:
            return Verdict("bad_signature", f"{name}: only sha256=<hex> is accepted")
        expected = signature_of(secret, body)
        # compare_digest on ASCII bytes: an odd character in the header is a
        # mismatch, not an exception.
        if not hmac.compare_digest(expected.encode(), given.lower().encode("ascii", "replace")):
            return Verdict("bad_signature", f"{name} does not match the body and the secret")
        return None
    return Verdict("unsigned", "no signature header (" + ", ".join(SIGNATURE_HEADERS) + ")")


def delivery_id(headers: Mapping[str, str]) -> str | None:
    for name in DELIVERY_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            return value[:200]
    return None


def event_of(headers: Mapping[str, str]) -> str | None:
    for name in EVENT_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            return value.lower()
    return None


def pushed_refs(payload: Any) -> list[str]:
    """The refs a push payload moved (``refs/heads/main``), in the forges' shapes.

    GitHub and Gitea: ``{"ref": "refs/heads/main", ...}``. Bitbucket Server:
    ``{"changes": [{"refId": "refs/heads/main", ...}]}``. Bitbucket Cloud:
    ``{"push": {"changes": [{"new": {"type": "branch", "name": "main"}}]}}``.
    """
    if not isinstance(payload, dict):
        return []
    refs: list[str] = []
    if isinstance(payload.get("ref"), str):
        refs.append(payload["ref"])
    for change in payload.get("changes") or []:
        if isinstance(change, dict):
            ref = change.get("refId") or (change.get("ref") or {}).get("id")
            if isinstance(ref, str):
                refs.append(ref)
    push = payload.get("push")
    for change in (push.get("changes") or []) if isinstance(push, dict) else []:
        new = change.get("new") if isinstance(change, dict) else None
        name = new.get("name") if isinstance(new, dict) else None
        if isinstance(new, dict) and new.get("type") == "branch" and isinstance(name, str):
            refs.append("refs/heads/" + name)
    return refs


class RecentDeliveries:
    """A bounded memory of delivery ids and body digests (oldest forgotten first).

    Not thread-safe: the caller holds a lock around ``judge``.
    """

    def __init__(self, size: int = REMEMBERED_DELIVERIES) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, key: str) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


def judge(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    branch: str,
    recent: RecentDeliveries,
    max_body: int = MAX_BODY_BYTES,
) -> Verdict:
    """The verdict on one delivery (see the module's docstring); ``headers`` lower-cased.

    A delivery that passed the signature check is remembered in ``recent``,
    whatever the rest of the verdict, so that it cannot be replayed.
    """
    if len(body) > max_body:
        return Verdict("too_large", f"the body is over {max_body} bytes")
    refused = check_signature(headers, body, secret)
    if refused is not None:
        return refused
    delivery = delivery_id(headers)
    keys = [f"body:{hashlib.sha256(body).hexdigest()}"]
    if delivery is not None:
        keys.append(f"id:{delivery}")
    if any(key in recent for key in keys):
        return Verdict("stale", "this delivery was received before", delivery)
    for key in keys:
        recent.remember(key)
    event = event_of(headers)
    if event in PING_EVENTS:
        return Verdict("ping", "pong", delivery)
    if event is not None and event not in PUSH_EVENTS:
        return Verdict("ignored", f"{event} events start nothing; send push events", delivery)
    try:
        payload = json.loads(body)
    except ValueError:
        return Verdict(
            "bad_request", "the body is not JSON: set the hook's content type to JSON", delivery
        )
    refs = pushed_refs(payload)
    wanted = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    if wanted in refs:
        return Verdict("accepted", f"a pass starts for {wanted}", delivery, wanted)
    if not refs:
        return Verdict("bad_request", "the body names no pushed ref", delivery)
    return Verdict(
        "wrong_branch", f"{refs[0][:200]} is not {wanted}: nothing to do", delivery, refs[0][:200]
    )
