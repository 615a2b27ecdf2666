"""What the restic adapter decides without running restic: URLs, errors, output checks."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from reconciler.adapters.restic import (
    Completed,
    LocalRunner,
    Repository,
    Retention,
    classify,
    parse_backup_lines,
    parse_snapshot,
    repository_url,
    strip_credentials,
)
from reconciler.errors import RepositoryNotFound, ResticError, Unavailable, WrongKey

FULL = "d019acf43d48bf16bcd39b97ad9c84ec0948ce57643a2aad759f96cc9d934473"
TREE = "ffbcc334cd6c79cfc8f24bd5c6a6d344bdcbb57a8301c8758267fd3d6c0a84cb"


@pytest.mark.parametrize(
    ("target", "env", "expected"),
    [
        ("s3://my-bucket/prod", {}, "s3:s3.amazonaws.com/my-bucket/prod"),
        ("s3://my-bucket/a/dev/", {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000/"},
         "s3:http://127.0.0.1:9000/my-bucket/a/dev"),
        ("s3://my-bucket", {}, "s3:s3.amazonaws.com/my-bucket"),
        ("file:///var/backups/site", {}, "/var/backups/site"),
    ],
)  # fmt: skip
def test_target_urls_map_to_restic_repositories(
    target: str, env: dict[str, str], expected: str
) -> None:
    assert repository_url(target, env) == expected


@pytest.mark.parametrize(
    "target",
    ["s3://Bad_Bucket/x", "s3://bucket/a/../b", "file://host/x", "file:relative", "sftp://h/x"],
)
def test_bad_targets_are_refused(target: str) -> None:
    with pytest.raises(ResticError):
        repository_url(target, {})


def test_credentials_are_stripped_and_the_key_stays_out_of_repr() -> None:
    assert strip_credentials("s3:http://user:pw@host:9000/b") == "s3:http://host:9000/b"
    repo = Repository("file:///tmp/r", key="s3cret", env={})
    assert "s3cret" not in repr(repo)


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("Fatal: wrong password or no key found\n", WrongKey),
        ("Fatal: unable to open config file: stat /r/config: no such file or directory\n"
         "Is there a repository at the following location?\n/r", RepositoryNotFound),
        ("Fatal: unable to open config file: Stat: The specified key does not exist.\n"
         "Is there a repository at the following location?", RepositoryNotFound),
        ("Fatal: unable to open config file: Stat: Head \"http://x/config\": dial tcp "
         "127.0.0.1:1: connect: connection refused\nIs there a repository at the following "
         "location?", Unavailable),
        ("Fatal: unable to open config file: Stat: The specified bucket does not exist.\n"
         "Is there a repository at the following location?", RepositoryNotFound),
        ("Fatal: unable to create lock in backend: repository is already locked", Unavailable),
        ("Fatal: all target directories/files do not exist", ResticError),
    ],
)  # fmt: skip
def test_stderr_decides_the_error_class(stderr: str, kind: type[Exception]) -> None:
    error = classify(stderr, what="snapshots", where="s3://b/prod")
    assert type(error) is kind
    assert "s3://b/prod" in str(error)


def snapshot(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "time": "2026-12-01T23:22:45.870795337Z",
        "tree": TREE,
        "paths": ["/volume/site"],
        "hostname": "vm",
        "tags": ["site"],
        "id": FULL,
        "short_id": FULL[:8],
    }
    data.update(changes)
    return data


def test_a_snapshot_is_parsed_with_nanoseconds() -> None:
    parsed = parse_snapshot(snapshot())
    assert parsed.id == FULL
    assert parsed.time.microsecond == 870795
    assert parsed.paths == ("/volume/site",)


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "../../etc"},
        {"id": FULL.upper()},
        {"short_id": "deadbeef"},
        {"paths": ["/volume/../etc"]},
        {"paths": ["relative"]},
        {"tree": "x"},
        {"time": "yesterday"},
    ],
)
def test_snapshots_restic_should_never_print_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ResticError):
        parse_snapshot(snapshot(**changes))


def test_backup_output_gives_progress_and_the_summary() -> None:
    lines = [
        "/x does not exist, skipping",
        '{"message_type":"status","percent_done":0.5,"total_files":2,"files_done":1}',
        '{"message_type":"summary","files_new":2,"data_added":10,"snapshot_id":"d019acf4"}',
    ]
    seen: list[float] = []
    summary = parse_backup_lines(lines, lambda p: seen.append(p.percent_done))
    assert seen == [0.5]
    assert summary.snapshot_id == "d019acf4"
    assert summary.files_new == 2
    with pytest.raises(ResticError):
        parse_backup_lines(['{"message_type":"summary","snapshot_id":"; rm -rf /"}'])
    with pytest.raises(ResticError):
        parse_backup_lines(lines[:2])


def test_retention_always_keeps_the_last_three_and_the_last_day() -> None:
    assert Retention(daily=7, weekly=0, monthly=12).args() == [
        "--keep-last", "3", "--keep-within", "1d", "--keep-daily", "7", "--keep-monthly", "12",
    ]  # fmt: skip


class Recording:
    """A Runner that records what restic would be run with."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def run(self, args: Sequence[str], *, env: Mapping[str, str], **_: object) -> Completed:
        self.calls.append((list(args), dict(env)))
        return Completed(0, ["[]"], "")


def test_the_key_travels_in_the_environment_only() -> None:
    runner = Recording()
    repo = Repository(
        "s3://my-bucket/prod",
        key="s3cret-key",
        env={"AWS_ACCESS_KEY_ID": "A", "GITHUB_TOKEN": "nope"},
        runner=runner,
    )
    repo.snapshots()
    repo.forget(Retention())

    for args, env in runner.calls:
        assert not any("s3cret" in a for a in args)
        assert env["RESTIC_PASSWORD"] == "s3cret-key"
        assert env["RESTIC_REPOSITORY"] == "s3:s3.amazonaws.com/my-bucket/prod"
        assert "GITHUB_TOKEN" not in env


def test_ids_and_paths_are_checked_before_restic_runs() -> None:
    repo = Repository("file:///tmp/r", key="k", env={}, runner=Recording())
    with pytest.raises(ResticError):
        repo.dump("latest; rm -rf /", "/db.sql", io.BytesIO())
    with pytest.raises(ResticError):
        repo.restore(FULL, target=Path("/tmp/out"), include=["/volume/../../etc"])
    with pytest.raises(ResticError):
        repo.backup_stdin(io.BytesIO(), filename="../db.sql", host="vm")


def test_a_timeout_kills_restic_and_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    runner = LocalRunner(binary="/bin/sh")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="did not finish"):
        runner.run(["-c", f"sleep 60 & echo $! > {marker}; wait"], env={}, timeout_s=0.5)
    assert time.monotonic() - started < 15
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists():
        time.sleep(0.05)
    status = Path(f"/proc/{child}/stat")
    assert not status.exists() or status.read_text().split()[2] == "Z"


def test_refused_credentials_are_said_so_never_read_as_unreachable() -> None:
    error = classify(
        "Fatal: unable to open config file: Stat: Access Denied.\nIs there a repository",
        what="snapshots",
        where="s3://b/prod",
    )
    assert type(error) is ResticError
    assert "s3://b/prod refused the credentials" in str(error)
    assert "AWS_ACCESS_KEY_ID" in str(error)
