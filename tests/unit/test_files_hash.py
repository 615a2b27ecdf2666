"""hash_path: one stable digest of a file or a tree, that changes with what a container sees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.model.files import hash_path


def _tree(root: Path, files: dict[str, str], *, reverse: bool = False) -> Path:
    for rel in sorted(files, reverse=reverse):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[rel])
        path.chmod(0o644)
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)
    return root


FILES = {"index.html": "<h1>hi</h1>", "css/site.css": "body {}", "css/a/b.txt": "b", "z": ""}


def test_same_files_give_the_same_hash_whatever_the_creation_order(tmp_path: Path) -> None:
    first = _tree(tmp_path / "one", FILES)
    second = _tree(tmp_path / "two", FILES, reverse=True)
    assert hash_path(first) == hash_path(second)
    assert hash_path(first) == hash_path(first)
    assert len(hash_path(first)) == 64


def test_the_digest_of_a_known_tree_never_changes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", {"a": "A", "d/b": "B"})
    # Pinned: a change of the algorithm would recreate every service with a
    # bind-mounted file and rebuild every image; make it on purpose only.
    assert hash_path(root) == "8fd07330cb81f80b366f3ed2adb716f5933d48aa81babec560ebef422d311b7a"
    assert hash_path(root / "a") != hash_path(root / "d" / "b")


@pytest.mark.parametrize(
    "change",
    ["content", "new file", "removed file", "renamed file", "mode", "folder mode", "empty folder"],
)
def test_any_change_a_container_could_see_changes_the_hash(tmp_path: Path, change: str) -> None:
    root = _tree(tmp_path / "t", FILES)
    before = hash_path(root)
    match change:
        case "content":
            (root / "css/site.css").write_text("body { color: red }")
        case "new file":
            (root / "new.txt").write_text("")
        case "removed file":
            (root / "z").unlink()
        case "renamed file":
            (root / "z").rename(root / "y")
        case "mode":
            (root / "index.html").chmod(0o755)
        case "folder mode":
            (root / "css").chmod(0o700)
        case "empty folder":
            (root / "empty").mkdir()
    assert hash_path(root) != before


def test_symlinks_are_hashed_by_target_not_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", FILES)
    outside = tmp_path / "outside.txt"
    outside.write_text("one")
    (root / "link").symlink_to(outside)
    before = hash_path(root)
    outside.write_text("two")  # not followed: the tree is unchanged
    assert hash_path(root) == before
    (root / "link").unlink()
    (root / "link").symlink_to("index.html")
    assert hash_path(root) != before


def test_a_single_file_hash_covers_content_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text("server {}")
    path.chmod(0o644)
    before = hash_path(path)
    path.chmod(0o600)
    assert hash_path(path) != before
    path.chmod(0o644)
    assert hash_path(path) == before
    path.write_text("server { listen 80; }")
    assert hash_path(path) != before


def test_git_metadata_is_not_part_of_the_hash(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", FILES)
    before = hash_path(root)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main")
    assert hash_path(root) == before


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_path(tmp_path / "missing")


def test_file_and_folder_with_the_same_bytes_differ(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    os.chmod(tmp_path / "f", 0o644)
    os.chmod(tmp_path / "d" / "f", 0o644)
    assert hash_path(tmp_path / "f") != hash_path(tmp_path / "d")


def test_skipped_paths_are_left_out_with_what_they_hold(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", FILES)
    before = hash_path(root)
    (root / "css/node_modules/x").mkdir(parents=True)
    assert hash_path(root, skip=["css/node_modules"]) == before
    assert hash_path(root, skip=["css/a"]) != before
    assert hash_path(root) != before
