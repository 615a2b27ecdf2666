"""How GitSource reads a repository URL, and what it shows of it (no git runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.git_source import GitSource


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("ssh://git@github.com/o/r.git", "ssh"),
        ("git+ssh://git@host/o/r.git", "ssh"),
        ("git@github.com:o/r.git", "ssh"),
        ("github.com:o/r.git", "ssh"),
        ("https://tok@github.com/o/r.git", "http"),
        ("http://127.0.0.1:8080/r.git", "http"),
        ("git://127.0.0.1/r.git", "git"),
        ("file:///srv/r.git", "file"),
        ("/srv/r.git", "local"),
        ("./dir:with-colon/r.git", "local"),
        ("relative/r.git", "local"),
    ],
)
def test_transport(url: str, transport: str, tmp_path: Path) -> None:
    assert GitSource(url, branch="main", cache_dir=tmp_path).transport == transport


def test_relative_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = GitSource("repo.git", branch="main", cache_dir=tmp_path / "cache")
    assert source.safe_url == str(tmp_path / "repo.git")


def test_safe_url_has_no_credentials(tmp_path: Path) -> None:
    source = GitSource("https://u:tok@h/r.git", branch="main", cache_dir=tmp_path)
    assert source.safe_url == "https://***@h/r.git"
    assert "tok" not in repr(vars(source).get("url", ""))


def test_checkout_refuses_anything_but_a_full_commit_id(tmp_path: Path) -> None:
    source = GitSource("/nonexistent", branch="main", cache_dir=tmp_path)
    for bad in ("HEAD", "main", "abc123", "../../etc/passwd", "g" * 40):
        with pytest.raises(ValueError, match="full commit id"):
            source.checkout(bad)
    assert not (tmp_path / "checkouts").exists()


@pytest.mark.parametrize("branch", ["", "a:b", "main*", "-x", "a..b", "a b", "x.lock", "/a"])
def test_invalid_branch_names_are_refused(branch: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="branch"):
        GitSource("/r.git", branch=branch, cache_dir=tmp_path)


@pytest.mark.parametrize("branch", ["main", "release/1.2", "feature_x-y", "v1.0"])
def test_valid_branch_names_are_kept(branch: str, tmp_path: Path) -> None:
    assert GitSource("/r.git", branch=branch, cache_dir=tmp_path).branch == branch
