"""Credentials never survive redaction; everything else is left as it was."""

from __future__ import annotations

import pytest

from reconciler.redaction import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:tok@host/x", "https://***@host/x"),
        ("https://ghp_abc123@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("http://u:p@127.0.0.1:8080/repo.git", "http://***@127.0.0.1:8080/repo.git"),
        ("https://user:p@ss@host/x", "https://***@host/x"),
        ("https://user:tok@host", "https://***@host"),
        ("HTTPS://user:tok@host/x", "HTTPS://***@host/x"),
        ("ssh://git@host/repo.git", "ssh://git@host/repo.git"),
        ("ssh://git:secret@host:2222/repo.git", "ssh://git:***@host:2222/repo.git"),
        ("git+ssh://git:secret@host/repo.git", "git+ssh://git:***@host/repo.git"),
        ("git@github.com:owner/repo.git", "git@github.com:owner/repo.git"),
        ("git://127.0.0.1:9418/repo.git", "git://127.0.0.1:9418/repo.git"),
        ("file:///srv/git/repo.git", "file:///srv/git/repo.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
        ("./relative/repo", "./relative/repo"),
        ("https://host/x?access_token=abc&ref=main", "https://host/x?access_token=***&ref=main"),
        ("https://host/x/@y", "https://host/x/@y"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_leaves_urls_without_credentials_byte_for_byte() -> None:
    url = "https://Example.COM:443/a%20b/repo.git#frag"
    assert redact_url(url) == url


def test_redact_text_redacts_every_url_in_a_git_message() -> None:
    stderr = (
        "fatal: unable to access 'https://alice:s3cret@git.example.com/r.git/': "
        "The requested URL returned error: 403\n"
        "remote: see http://tok3n@mirror.example.com/r.git and ssh://git:pw@h/r\n"
    )
    redacted = redact_text(stderr)
    for secret in ("alice", "s3cret", "tok3n", ":pw@"):
        assert secret not in redacted
    assert "'https://***@git.example.com/r.git/'" in redacted
    assert "http://***@mirror.example.com/r.git" in redacted
    assert "ssh://git:***@h/r" in redacted
    assert redacted.startswith("fatal: unable to access")


def test_redact_text_leaves_plain_text_alone() -> None:
    text = "fatal: Could not read from remote repository.\nuser@host: Permission denied"
    assert redact_text(text) == text
