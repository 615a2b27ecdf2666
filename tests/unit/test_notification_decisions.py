"""What to notify, as tables: deduplication, commit statuses, forges, missed backups (pure)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.decide.notifications import (
    COMMIT_STATUS_MEMORY,
    ForgeUnknown,
    Notice,
    backup_missed,
    commit_state_of,
    decide,
    decide_commit_status,
    forge_of,
    parse_repo,
)

FAIL_A = Notice(kind="pass", ok=False, message="boom", commit="a", reason="failed/ApplyFailed")
FAIL_A_OTHER_MESSAGE = Notice(
    kind="pass", ok=False, message="bang", commit="a", reason="failed/ApplyFailed"
)
FAIL_B = Notice(kind="pass", ok=False, message="boom", commit="b", reason="failed/ApplyFailed")
FAIL_A_OTHER_REASON = Notice(
    kind="pass", ok=False, message="boom", commit="a", reason="stalled/ValidationFailed"
)
DOWN = Notice(kind="pass", ok=False, message="git down", reason="unavailable/SourceUnavailable")
OK = Notice(kind="pass", ok=True, message="fine", commit="a")
RESTORE_OK = Notice(kind="restore", ok=True, message="done", announce_success=True, identity="r1")
RESTORE_FAIL_1 = Notice(kind="restore", ok=False, message="no backup", identity="r1")
RESTORE_FAIL_2 = Notice(kind="restore", ok=False, message="no backup", identity="r2")


def after(*notices: Notice) -> dict[str, Any] | None:
    """The record kept after sending each of ``notices`` in turn."""
    last: dict[str, Any] | None = None
    for notice in notices:
        message, record = decide(notice, last)
        if message is not None:
            last = record
    return last


@pytest.mark.parametrize(
    ("history", "notice", "expected"),
    [
        # (what was sent before, what happens now, the event sent now or None)
        ((), FAIL_A, "pass.failed"),
        ((FAIL_A,), FAIL_A, None),  # the same failure again: quiet
        ((FAIL_A,), FAIL_A_OTHER_MESSAGE, "pass.failed"),
        ((FAIL_A,), FAIL_B, "pass.failed"),  # another commit
        ((FAIL_A,), FAIL_A_OTHER_REASON, "pass.failed"),
        ((FAIL_A,), OK, "pass.recovered"),
        ((FAIL_A, OK), OK, None),  # recovered once, then quiet
        ((FAIL_A, OK), FAIL_A, "pass.failed"),  # it broke again: news
        ((), OK, None),  # a success with nothing to recover from
        ((), DOWN, "pass.failed"),
        ((DOWN,), DOWN, None),
        ((), RESTORE_OK, "restore.succeeded"),  # every restore result is news
        ((RESTORE_FAIL_1,), RESTORE_OK, "restore.succeeded"),
        ((RESTORE_FAIL_1,), RESTORE_FAIL_2, "restore.failed"),  # another restore
    ],
)
def test_decide(history: tuple[Notice, ...], notice: Notice, expected: str | None) -> None:
    message, _record = decide(notice, after(*history))
    assert (message.event if message else None) == expected


def test_severity_and_fields() -> None:
    failed, _ = decide(FAIL_A, None)
    down, _ = decide(DOWN, None)
    recovered, _ = decide(OK, after(FAIL_A))
    assert failed is not None
    assert down is not None
    assert recovered is not None
    assert (failed.severity, down.severity, recovered.severity) == ("error", "warning", "info")
    assert (failed.commit, failed.message) == ("a", "boom")


@pytest.mark.parametrize(
    ("result", "state"),
    [
        ("succeeded", "success"),
        ("failed", "failure"),
        ("stalled", "failure"),
        ("unavailable", None),
    ],
)
def test_commit_state_of(result: str, state: str | None) -> None:
    assert commit_state_of(result) == state


def test_commit_status_once_per_change() -> None:
    sent: dict[str, str] = {}
    steps = [
        ("a", "pending", True),
        ("a", "success", True),
        ("a", "success", False),  # every later pass on the same commit
        ("b", "failure", True),
        ("b", "failure", False),
        ("a", "failure", True),  # drift repair on a failed later
        ("a", "success", True),
    ]
    for commit, state, expected in steps:
        send, sent = decide_commit_status(commit, state, sent)  # type: ignore[arg-type]
        assert send is expected, (commit, state)


def test_commit_status_memory_is_bounded() -> None:
    sent: dict[str, str] = {}
    for n in range(COMMIT_STATUS_MEMORY + 10):
        _send, sent = decide_commit_status(f"c{n}", "success", sent)
    assert len(sent) == COMMIT_STATUS_MEMORY
    assert "c0" not in sent
    assert f"c{COMMIT_STATUS_MEMORY + 9}" in sent


@pytest.mark.parametrize(
    ("url", "provider", "api", "owner", "repo"),
    [
        ("https://github.com/acme/shop.git", "github", "https://api.github.com", "acme", "shop"),
        ("https://x-access-token:ghp_s3cret@github.com/acme/shop", "github",
         "https://api.github.com", "acme", "shop"),
        ("git@github.com:acme/shop.git", "github", "https://api.github.com", "acme", "shop"),
        ("ssh://git@github.com/acme/shop.git", "github", "https://api.github.com", "acme", "shop"),
        ("git@github.example.com:ops/site.git", "github", "https://github.example.com/api/v3",
         "ops", "site"),
        ("git@bitbucket.org:team/shop.git", "bitbucket", "https://api.bitbucket.org/2.0",
         "team", "shop"),
        ("https://jdoe@bitbucket.org/team/shop.git", "bitbucket",
         "https://api.bitbucket.org/2.0", "team", "shop"),
        ("ssh://git@gitea.example.com:2222/acme/shop.git", "gitea",
         "https://gitea.example.com/api/v1", "acme", "shop"),
        ("https://codeberg.org/acme/shop", "gitea", "https://codeberg.org/api/v1", "acme", "shop"),
    ],
)  # fmt: skip
def test_forge_guessed_from_the_repository(
    url: str, provider: str, api: str, owner: str, repo: str
) -> None:
    forge = forge_of(url)
    assert (forge.provider, forge.api, forge.owner, forge.repo) == (provider, api, owner, repo)


def test_forge_set_by_hand_for_a_self_hosted_gitea_under_a_path() -> None:
    forge = forge_of(
        "https://git.example.com/code/acme/shop.git",
        provider="gitea",
        api="https://git.example.com/code/api/v1/",
    )
    assert (forge.api, forge.owner, forge.repo) == (
        "https://git.example.com/code/api/v1",
        "acme",
        "shop",
    )


@pytest.mark.parametrize(
    "url", ["/srv/git/shop", "file:///srv/git/shop", "https://git.example.com/acme/shop"]
)
def test_unknown_forges_say_what_to_set(url: str) -> None:
    with pytest.raises(ForgeUnknown) as caught:
        forge_of(url)
    if url.startswith("https://"):
        assert "RECONCILER_COMMIT_STATUS_PROVIDER" in str(caught.value)


def test_parse_repo_never_keeps_credentials() -> None:
    assert parse_repo("https://user:tok@host.example/a/b.git") == ("host.example", "a", "b")


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last_success", "watching_since", "missed"),
    [
        (NOW - timedelta(hours=25), NOW - timedelta(days=9), False),
        (NOW - timedelta(hours=27), NOW - timedelta(days=9), True),
        (None, NOW - timedelta(hours=1), False),  # a fresh install is not missed at once
        (None, NOW - timedelta(hours=27), True),
    ],
)
def test_backup_missed(
    last_success: datetime | None, watching_since: datetime, missed: bool
) -> None:
    since = backup_missed(last_success=last_success, watching_since=watching_since, now=NOW)
    assert (since is not None) is missed


def test_the_decision_module_imports_no_io_library() -> None:
    code = (
        "import sys, reconciler.decide.notifications\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'docker', 'boto3', 'git', 'requests', 'urllib3'})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
