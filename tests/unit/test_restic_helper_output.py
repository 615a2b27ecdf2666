"""The helper's output: what a followed log dropped at the container's exit is read after it.

moby's json-file follower can end before the last lines of a container that
exits (seen in CI: restic's summary line missing, the backup refused). The
engine here is a stand-in whose followed log stops early; the real engine's
path is covered by tests/integration/test_restic_adapter.py.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from reconciler.adapters.restic_helper import HelperRunner

SUMMARY = b'{"message_type":"summary","snapshot_id":"' + b"a" * 64 + b'"}\n'
OUTPUT = b'{"message_type":"status","percent_done":0}\n' + SUMMARY


class _Container:
    def __init__(self, output: bytes, followed: int) -> None:
        self.output = output
        self.followed = followed  # how many bytes the followed log delivers
        self.removed = False

    def start(self) -> None:
        pass

    def logs(self, *, stream: bool = False, follow: bool = False, **_: Any) -> Any:
        if not stream:
            return b""  # stderr
        shown = self.output[: self.followed] if follow else self.output
        return _chunks(shown, 7)

    def wait(self) -> dict[str, int]:
        return {"StatusCode": 0}

    def kill(self) -> None:
        pass

    def remove(self, **_: Any) -> None:
        self.removed = True


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class _Collection:
    def __init__(self, container: _Container | None = None) -> None:
        self.container = container

    def get(self, _name: str) -> None:
        return None

    def create(self, *_: Any, **__: Any) -> _Container | None:
        return self.container


class _Client:
    def __init__(self, container: _Container) -> None:
        self.volumes = _Collection()
        self.images = _Collection()
        self.containers = _Collection(container)


def _run(followed: int, **kwargs: Any) -> tuple[list[str], _Container]:
    container = _Container(OUTPUT, followed)
    runner = HelperRunner(client=_Client(container), image="img", project="p")
    result = runner.run(["backup", "--json"], env={}, timeout_s=60, **kwargs)
    return result.stdout_lines, container


def test_lines_the_followed_log_dropped_at_exit_are_read_after_it() -> None:
    for followed in range(len(OUTPUT) + 1):
        lines, container = _run(followed)
        assert "\n".join(lines) + "\n" == OUTPUT.decode(), followed
        assert container.removed


def test_each_line_reaches_the_callback_once_and_is_not_kept() -> None:
    seen: list[str] = []
    lines, _ = _run(len(OUTPUT) // 2, on_line=seen.append)
    assert seen == OUTPUT.decode().splitlines()
    assert lines == []


def test_bytes_to_a_sink_are_written_once_in_order() -> None:
    for followed in (0, 5, len(OUTPUT) - 1, len(OUTPUT)):
        sink = io.BytesIO()
        _run(followed, stdout=sink)
        assert sink.getvalue() == OUTPUT, followed
