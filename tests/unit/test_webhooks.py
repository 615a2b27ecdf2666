"""The push webhook's verdicts (decide/webhooks.py): no server, no I/O."""

from __future__ import annotations

import json

import pytest

from reconciler.decide import webhooks
from reconciler.decide.webhooks import RecentDeliveries, Verdict, judge, signature_of
from reconciler.errors import SettingsError
from reconciler.settings import load_settings

SECRET = "s3cret-s3cret-s3cret"
GITHUB_PUSH = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
BITBUCKET_PUSH = json.dumps(
    {
        "eventKey": "repo:refs_changed",
        "changes": [
            {"ref": {"id": "refs/heads/main", "type": "BRANCH"}, "refId": "refs/heads/main"}
        ],
    }
).encode()


def github(body: bytes, *, secret: str = SECRET, delivery: str = "d-1") -> dict[str, str]:
    return {
        "x-github-event": "push",
        "x-github-delivery": delivery,
        "x-hub-signature-256": "sha256=" + signature_of(secret, body),
    }


def gitea(body: bytes, *, delivery: str = "g-1") -> dict[str, str]:
    return {
        "x-gitea-event": "push",
        "x-gitea-delivery": delivery,
        "x-gitea-signature": signature_of(SECRET, body),
    }


def bitbucket(body: bytes, *, delivery: str = "b-1") -> dict[str, str]:
    return {
        "x-event-key": "repo:refs_changed",
        "x-request-id": delivery,
        "x-hub-signature": "sha256=" + signature_of(SECRET, body),
    }


def verdict(headers: dict[str, str], body: bytes, **kw: object) -> Verdict:
    recent = kw.pop("recent", None)
    if recent is None:
        recent = RecentDeliveries()
    assert isinstance(recent, RecentDeliveries)
    branch = str(kw.pop("branch", "main"))
    return judge(headers, body, secret=SECRET, branch=branch, recent=recent)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (github(GITHUB_PUSH), GITHUB_PUSH),
        (gitea(GITHUB_PUSH), GITHUB_PUSH),
        (bitbucket(BITBUCKET_PUSH), BITBUCKET_PUSH),
    ],
    ids=["github", "gitea", "bitbucket-server"],
)
def test_a_signed_push_of_the_branch_is_accepted(headers: dict[str, str], body: bytes) -> None:
    result = verdict(headers, body)
    assert (result.result, result.status, result.starts_pass) == ("accepted", 202, True)
    assert result.ref == "refs/heads/main"


def test_bitbucket_cloud_shape_is_read() -> None:
    body = json.dumps({"push": {"changes": [{"new": {"type": "branch", "name": "main"}}]}})
    headers = bitbucket(body.encode()) | {"x-event-key": "repo:push"}
    assert verdict(headers, body.encode()).result == "accepted"


def test_unsigned_is_refused_401() -> None:
    result = verdict({"x-github-event": "push"}, GITHUB_PUSH)
    assert (result.result, result.status, result.starts_pass) == ("unsigned", 401, False)


@pytest.mark.parametrize(
    "headers",
    [
        github(GITHUB_PUSH, secret="another-secret-entirely"),
        {"x-hub-signature-256": "sha256=" + "0" * 64},
        {"x-hub-signature-256": "sha256=not-hex-\u00e9"},
        {"x-hub-signature-256": signature_of(SECRET, GITHUB_PUSH)},  # no sha256= prefix
        {"x-hub-signature": "sha1=" + "0" * 40},  # GitHub's legacy header: not enough
        {"x-gitea-signature": ""},
    ],
    ids=["other-secret", "zeros", "junk", "no-prefix", "sha1", "empty"],
)
def test_a_bad_signature_is_refused_403(headers: dict[str, str]) -> None:
    result = verdict(headers, GITHUB_PUSH)
    assert (result.result, result.status, result.starts_pass) == ("bad_signature", 403, False)


def test_the_signature_covers_the_raw_body() -> None:
    headers = github(GITHUB_PUSH)
    tampered = GITHUB_PUSH.replace(b"main", b"mainx")
    assert verdict(headers, tampered).result == "bad_signature"
    assert verdict(headers, GITHUB_PUSH + b" ").result == "bad_signature"


def test_a_replayed_delivery_is_stale() -> None:
    recent = RecentDeliveries()
    assert verdict(github(GITHUB_PUSH), GITHUB_PUSH, recent=recent).result == "accepted"
    again = verdict(github(GITHUB_PUSH), GITHUB_PUSH, recent=recent)
    assert (again.result, again.status, again.starts_pass) == ("stale", 403, False)
    # The id is not signed: the same body under a new id is a replay too.
    renamed = verdict(github(GITHUB_PUSH, delivery="d-2"), GITHUB_PUSH, recent=recent)
    assert renamed.result == "stale"
    # A new push (a new body) under an id seen before is a replay of the id.
    other = json.dumps({"ref": "refs/heads/main", "after": "b" * 40}).encode()
    assert verdict(github(other, delivery="d-1"), other, recent=recent).result == "stale"
    fresh = json.dumps({"ref": "refs/heads/main", "after": "c" * 40}).encode()
    assert verdict(github(fresh, delivery="d-3"), fresh, recent=recent).result == "accepted"


def test_a_badly_signed_delivery_does_not_poison_the_memory() -> None:
    recent = RecentDeliveries()
    forged = github(GITHUB_PUSH, secret="another-secret-entirely")
    assert verdict(forged, GITHUB_PUSH, recent=recent).result == "bad_signature"
    assert len(recent) == 0
    assert verdict(github(GITHUB_PUSH), GITHUB_PUSH, recent=recent).result == "accepted"


def test_the_memory_is_bounded_oldest_first() -> None:
    recent = RecentDeliveries(size=3)
    for key in "abcd":
        recent.remember(key)
    assert len(recent) == 3
    assert "a" not in recent
    assert all(key in recent for key in "bcd")


def test_another_branch_is_acknowledged_and_starts_nothing() -> None:
    body = json.dumps({"ref": "refs/heads/feature"}).encode()
    result = verdict(github(body), body)
    assert (result.result, result.status, result.starts_pass) == ("wrong_branch", 202, False)
    tag = json.dumps({"ref": "refs/tags/v1"}).encode()
    assert verdict(github(tag), tag).result == "wrong_branch"
    assert verdict(github(body, delivery="x"), body, branch="feature").result == "accepted"


def test_ping_and_other_events() -> None:
    ping = b'{"zen": "hi", "hook_id": 1}'
    assert verdict(github(ping) | {"x-github-event": "ping"}, ping).status == 200
    diag = b"{}"
    headers = bitbucket(diag) | {"x-event-key": "diagnostics:ping"}
    assert verdict(headers, diag).result == "ping"
    issue = b'{"action": "opened"}'
    result = verdict(github(issue) | {"x-github-event": "issues"}, issue)
    assert (result.result, result.starts_pass) == ("ignored", False)


def test_the_body_is_parsed_only_after_the_signature() -> None:
    junk = b"\xff{not json"
    assert verdict({}, junk).result == "unsigned"
    assert verdict({"x-gitea-signature": "00"}, junk).result == "bad_signature"
    signed = verdict(github(junk), junk)
    assert (signed.result, signed.status) == ("bad_request", 400)
    no_ref = b'{"hello": 1}'
    assert verdict(github(no_ref), no_ref).result == "bad_request"


def test_too_large_is_refused_before_the_signature_is_computed() -> None:
    body = b"x" * (webhooks.MAX_BODY_BYTES + 1)
    result = verdict(github(body), body)
    assert (result.result, result.status) == ("too_large", 413)


def test_every_result_has_a_status() -> None:
    assert set(webhooks.STATUS) == set(webhooks.RESULTS)


def test_the_secret_setting(tmp_path: object) -> None:
    base = {"RECONCILER_REPO": "/x", "RECONCILER_ENV_FILE": "/dev/null"}
    assert load_settings(base).webhook_secret is None
    on = load_settings(base | {"RECONCILER_WEBHOOK_SECRET": SECRET})
    assert on.webhook_secret == SECRET
    assert SECRET not in repr(on)
    with pytest.raises(SettingsError, match="at least 16 characters") as caught:
        load_settings(base | {"RECONCILER_WEBHOOK_SECRET": "short-secret"})
    assert "short-secret" not in str(caught.value)
