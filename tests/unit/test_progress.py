"""A deploy in progress as status reads it (deploy/progress.py), in two processes' shoes."""

from __future__ import annotations

from pathlib import Path

from reconciler.deploy.progress import PASS_LOCK_FILE, PROGRESS_FILE, ProgressFile
from reconciler.state.files import exclusive_lock


def test_a_running_deploy_is_read_with_its_step_while_the_pass_lock_is_held(
    tmp_path: Path,
) -> None:
    writer, reader = ProgressFile(tmp_path), ProgressFile(tmp_path)
    seen: list[str] = []
    with exclusive_lock(tmp_path / PASS_LOCK_FILE, wait_s=0, what="pass"):
        writer.begin("a" * 40, actions=3)
        assert reader.read() is not None
        listener = writer.listening(lambda name, _fields: seen.append(name))
        listener("action.start", {"action": "recreate service web: image changed"})
        progress = reader.read()
        assert progress is not None
        assert (progress.commit, progress.step, progress.actions) == (
            "a" * 40,
            "recreate service web: image changed",
            3,
        )
        writer.end()
        assert reader.read() is None
    assert seen == ["action.start"]


def test_a_dead_pass_leaves_a_file_that_is_not_believed(tmp_path: Path) -> None:
    with exclusive_lock(tmp_path / PASS_LOCK_FILE, wait_s=0, what="pass"):
        ProgressFile(tmp_path).begin("b" * 40, actions=1)
    # The holder is gone (the kernel drops an flock with its process).
    assert (tmp_path / PROGRESS_FILE).exists()
    assert ProgressFile(tmp_path).read() is None


def test_a_damaged_file_reads_as_no_deploy(tmp_path: Path) -> None:
    with exclusive_lock(tmp_path / PASS_LOCK_FILE, wait_s=0, what="pass"):
        (tmp_path / PROGRESS_FILE).write_text('{"commit": 1')
        assert ProgressFile(tmp_path).read() is None
        (tmp_path / PROGRESS_FILE).write_text('{"commit": "c"}')
        assert ProgressFile(tmp_path).read() is None
