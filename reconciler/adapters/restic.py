"""restic as the storage engine: a thin adapter over its command line.

restic runs as a subprocess (or, for volumes, in a helper container; see
``restic_helper.py``) with ``--json`` where it has it. Its output is parsed
into the dataclasses below and checked before anything uses it: snapshot ids
must be hex, paths absolute and free of ``..``. Its exit codes and stderr are
turned into our own errors, because restic 0.14 exits 1 for everything:

- ``RepositoryNotFound``: there is no repository at the URL (``ensure`` then
  runs ``init --repository-version 2``);
- ``WrongKey``: a repository is there and ``RECONCILER_BACKUP_KEY`` does not open it;
- ``Unavailable``: the store cannot be reached, or the repository is locked; retry later;
- ``ResticError``: anything else (a failed backup, a failed check).

The key reaches restic as ``RESTIC_PASSWORD`` in its environment, never on
its command line, never in a message. Every error names the target URL with
credentials stripped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from reconciler.errors import (
    IntegrityError,
    ReconcilerError,
    RepositoryNotFound,
    ResticError,
    Unavailable,
    WrongKey,
)

DEFAULT_S3_ENDPOINT = "s3.amazonaws.com"
DEFAULT_TIMEOUT_S = 6 * 3600.0
# Variables restic reads for S3; nothing else of our environment reaches it.
PASSED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "HOME",
    "PATH",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
HEX_ID = re.compile(r"^[0-9a-f]{8,64}$")
FULL_ID = re.compile(r"^[0-9a-f]{64}$")
TAG = re.compile(r"^[A-Za-z0-9._:=-]{1,128}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
STDERR_TAIL = 4000

ProgressCallback = Callable[["BackupProgress"], None]


# --- URLs --------------------------------------------------------------------------------


def strip_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part, for messages and logs."""
    return re.sub(r"(?<=://)[^/@]*@", "", url)


def repository_url(target: str, env: Mapping[str, str] | None = None) -> str:
    """restic's repository for one of our target URLs.

    ``s3://BUCKET/PREFIX`` becomes ``s3:<endpoint>/BUCKET/PREFIX`` with
    ``AWS_ENDPOINT_URL_S3`` (scheme kept) or AWS's ``s3.amazonaws.com``;
    ``file:///PATH`` becomes ``/PATH``.
    """
    env = os.environ if env is None else env
    parts = urlsplit(target)
    if parts.scheme == "s3":
        bucket = parts.netloc
        prefix = parts.path.strip("/")
        if not BUCKET.match(bucket):
            raise ResticError(f"{strip_credentials(target)}: {bucket!r} is not a valid bucket name")
        _check_segments(target, prefix)
        endpoint = (env.get("AWS_ENDPOINT_URL_S3") or DEFAULT_S3_ENDPOINT).rstrip("/")
        return f"s3:{endpoint}/{bucket}" + (f"/{prefix}" if prefix else "")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ResticError(f"{target}: a file target is file:///ABSOLUTE/PATH")
        _check_segments(target, parts.path.strip("/"))
        return parts.path.rstrip("/") or "/"
    raise ResticError(
        f"{strip_credentials(target)}: unsupported target (use s3://BUCKET/PREFIX or file:///PATH)"
    )


def _check_segments(target: str, path: str) -> None:
    if path and any(s in ("", ".", "..") for s in path.split("/")):
        raise ResticError(f"{strip_credentials(target)}: the path may not hold '.', '..' or '//'")


# --- what restic prints --------------------------------------------------------------------


@dataclass(frozen=True)
class BackupProgress:
    percent_done: float
    total_files: int
    files_done: int
    total_bytes: int
    bytes_done: int
    seconds_elapsed: int


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str
    files_new: int
    files_changed: int
    files_unmodified: int
    data_added: int
    total_files_processed: int
    total_bytes_processed: int
    total_duration: float
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime
    paths: tuple[str, ...]
    hostname: str
    tags: tuple[str, ...]
    tree: str


@dataclass(frozen=True)
class ForgetResult:
    kept: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class Key:
    id: str
    current: bool
    user: str
    host: str
    created: str


@dataclass(frozen=True)
class Retention:
    """keep-daily/weekly/monthly; ``--keep-last 3 --keep-within 1d`` are always added."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 12

    def args(self) -> list[str]:
        args = ["--keep-last", "3", "--keep-within", "1d"]
        for flag, count in (
            ("--keep-daily", self.daily),
            ("--keep-weekly", self.weekly),
            ("--keep-monthly", self.monthly),
        ):
            if count < 0:
                raise ValueError(f"{flag} must be 0 or more")
            if count:
                args += [flag, str(count)]
        return args


def checked_id(value: object, *, full: bool = False) -> str:
    """A snapshot, pack or key id as restic prints it: lower-case hex, or ResticError."""
    pattern = FULL_ID if full else HEX_ID
    if not isinstance(value, str) or not pattern.match(value):
        raise ResticError(f"restic printed an invalid id: {str(value)[:80]!r}")
    return value


def checked_path(value: object) -> str:
    """An absolute POSIX path with no '..', NUL or newline, or ResticError."""
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or any(c in value for c in "\0\n")
        or ".." in PurePosixPath(value).parts
    ):
        raise ResticError(f"an unsafe path: {str(value)[:200]!r}")
    return value


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ResticError(f"restic printed an invalid {key}: {value!r}")
    return int(value)


def parse_snapshot(data: object) -> Snapshot:
    if not isinstance(data, dict):
        raise ResticError("restic printed a snapshot that is not an object")
    full = checked_id(data.get("id"), full=True)
    short = checked_id(data.get("short_id", full[:8]))
    if not full.startswith(short):
        raise ResticError(f"restic printed snapshot {full} with short id {short}")
    try:
        # Go prints nanoseconds; Python parses at most microseconds.
        raw_time = re.sub(r"(\.\d{6})\d+", r"\1", str(data["time"])).replace("Z", "+00:00")
        when = datetime.fromisoformat(raw_time)
    except (KeyError, ValueError) as exc:
        raise ResticError(f"snapshot {full[:8]}: invalid time {data.get('time')!r}") from exc
    paths = tuple(checked_path(p) for p in data.get("paths") or ())
    tags = tuple(str(t) for t in data.get("tags") or ())
    return Snapshot(
        id=full,
        short_id=short,
        time=when,
        paths=paths,
        hostname=str(data.get("hostname", "")),
        tags=tags,
        tree=checked_id(data.get("tree"), full=True),
    )


def parse_backup_lines(
    lines: Iterable[str], on_progress: ProgressCallback | None = None
) -> BackupSummary:
    """The summary of ``restic backup --json`` output; progress lines go to the callback."""
    summary: dict[str, Any] | None = None
    errors: list[str] = []
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue  # restic prints a few plain lines (e.g. "... does not exist, skipping")
        if not isinstance(message, dict):
            continue
        kind = message.get("message_type")
        if kind == "status" and on_progress is not None:
            on_progress(
                BackupProgress(
                    percent_done=float(message.get("percent_done", 0.0)),
                    total_files=_int(message, "total_files"),
                    files_done=_int(message, "files_done"),
                    total_bytes=_int(message, "total_bytes"),
                    bytes_done=_int(message, "bytes_done"),
                    seconds_elapsed=_int(message, "seconds_elapsed"),
                )
            )
        elif kind == "error":
            errors.append(f"{message.get('during', '?')} {message.get('item', '?')}")
        elif kind == "summary":
            summary = message
    if summary is None:
        raise ResticError("restic backup ended without a summary")
    return BackupSummary(
        snapshot_id=checked_id(summary.get("snapshot_id")),
        files_new=_int(summary, "files_new"),
        files_changed=_int(summary, "files_changed"),
        files_unmodified=_int(summary, "files_unmodified"),
        data_added=_int(summary, "data_added"),
        total_files_processed=_int(summary, "total_files_processed"),
        total_bytes_processed=_int(summary, "total_bytes_processed"),
        total_duration=float(summary.get("total_duration", 0.0)),
        errors=tuple(errors),
    )


# --- running it ---------------------------------------------------------------------------


@dataclass
class Completed:
    returncode: int
    stdout_lines: list[str] = field(default_factory=list)
    stderr: str = ""


class Runner(Protocol):
    """Runs ``restic ARGS`` with ``env``; the local one and the helper container's.

    stdout goes to ``stdout`` as bytes, or to ``on_line`` line by line (then
    not kept: a listing of a million files is not held twice), or else into
    ``Completed.stdout_lines``.
    """

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout_s: float,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> Completed: ...


@dataclass(frozen=True)
class LocalRunner:
    """restic as a child process in its own process group, killed whole on timeout."""

    binary: str = "restic"

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout_s: float,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> Completed:
        try:
            process = subprocess.Popen(
                [self.binary, *args],
                env=dict(env),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ResticError(f"cannot run {self.binary}: {exc} (is restic installed?)") from exc
        timed_out = threading.Event()

        def kill_group() -> None:
            timed_out.set()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    return
                try:
                    process.wait(10)
                    return
                except subprocess.TimeoutExpired:
                    continue

        timer = threading.Timer(timeout_s, kill_group)
        timer.daemon = True
        timer.start()
        stderr_chunks: list[bytes] = []
        threads = [threading.Thread(target=_drain, args=(process.stderr, stderr_chunks))]
        if stdin is not None:
            threads.append(threading.Thread(target=_feed, args=(stdin, process.stdin)))
        for thread in threads:
            thread.daemon = True
            thread.start()
        lines: list[str] = []
        assert process.stdout is not None
        try:
            if stdout is not None:
                while chunk := process.stdout.read(1024 * 1024):
                    stdout.write(chunk)
            else:
                for raw in process.stdout:
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    if on_line is not None:
                        on_line(line)
                    else:
                        lines.append(line)
            process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                kill_group()
            for thread in threads:
                thread.join(30)
            for pipe in (process.stdout, process.stderr, process.stdin):
                if pipe is not None:
                    with suppress(OSError):
                        pipe.close()
        stderr = b"".join(stderr_chunks).decode("utf-8", "replace")
        if timed_out.is_set():
            raise Unavailable(f"restic {args[0]} did not finish within {timeout_s:.0f} s")
        return Completed(process.returncode, lines, stderr)


def _drain(stream: IO[bytes] | None, into: list[bytes]) -> None:
    if stream is None:
        return
    size = 0
    while chunk := stream.read(65536):
        size += len(chunk)
        if size < 1024 * 1024:  # restic's stderr is short; a runaway one is cut off
            into.append(chunk)


def _feed(source: IO[bytes], sink: IO[bytes] | None) -> None:
    if sink is None:
        return
    try:
        while chunk := source.read(1024 * 1024):
            sink.write(chunk)
    except (BrokenPipeError, OSError):
        pass  # restic stopped reading; its exit code and stderr say why
    finally:
        with suppress(OSError):
            sink.close()


_WRONG_KEY = ("wrong password or no key found",)
_ABSENT = ("Is there a repository at the following location?",)
_ABSENT_CAUSE = (
    "no such file or directory",
    "key does not exist",
    "bucket does not exist",
    "NoSuchKey",
    "NoSuchBucket",
)
_UNREACHABLE = (
    "dial tcp",
    "connection refused",
    "no such host",
    "i/o timeout",
    "TLS handshake",
    "connection reset",
    "repository is already locked",
    "unable to create lock",
    "503 Service Unavailable",
    "500 Internal Server Error",
)


_CREDENTIALS = ("Access Denied", "InvalidAccessKeyId", "SignatureDoesNotMatch")


def classify(stderr: str, *, what: str, where: str) -> ReconcilerError:
    """Our error for a failed restic command, from its stderr (restic 0.14 always exits 1)."""
    tail = _redact(stderr.strip()[-STDERR_TAIL:])
    if any(s in stderr for s in _WRONG_KEY):
        return WrongKey(
            f"the repository at {where} does not open with RECONCILER_BACKUP_KEY: it was made "
            "with another key; set the key this business's backups were made with"
        )
    if any(s in stderr for s in _CREDENTIALS):
        return ResticError(
            f"{where} refused the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY in the "
            f"env file) for restic {what}: {tail}"
        )
    unreachable = any(s in stderr for s in _UNREACHABLE)
    if not unreachable and all(
        any(s in stderr for s in group) for group in (_ABSENT, _ABSENT_CAUSE)
    ):
        return RepositoryNotFound(f"no restic repository at {where}")
    if unreachable:
        return Unavailable(f"{where} cannot be reached (restic {what}): {tail}")
    return ResticError(f"restic {what} failed at {where}: {tail}")


def _redact(text: str) -> str:
    return re.sub(r"(?<=://)[^/@\s]*@", "", text)


# --- the repository ------------------------------------------------------------------------


class Repository:
    """One restic repository: one of our target URLs opened with the business's key."""

    def __init__(
        self,
        target: str,
        *,
        key: str,
        env: Mapping[str, str] | None = None,
        runner: Runner | None = None,
        cache_dir: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        progress_fps: float = 1.0,
    ) -> None:
        if not key:
            raise ResticError("RECONCILER_BACKUP_KEY is empty: every backup needs the key")
        source = os.environ if env is None else env
        self.target = target
        self.where = strip_credentials(target)
        self.url = repository_url(target, source)
        self.runner: Runner = runner or LocalRunner()
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self._env = {k: source[k] for k in PASSED_ENV if k in source}
        self._env["RESTIC_REPOSITORY"] = self.url
        self._env["RESTIC_PASSWORD"] = key
        # With --json restic prints 60 status lines a second unless told otherwise.
        self._env["RESTIC_PROGRESS_FPS"] = str(progress_fps)

    def __repr__(self) -> str:  # never the key
        return f"Repository({self.where!r})"

    def _run(
        self,
        what: str,
        args: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        on_line: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
    ) -> Completed:
        common = ["--cache-dir", self.cache_dir] if self.cache_dir else []
        result = self.runner.run(
            [*args, *common],
            env=self._env,
            timeout_s=timeout_s or self.timeout_s,
            stdin=stdin,
            stdout=stdout,
            on_line=on_line,
        )
        if result.returncode != 0:
            raise classify(result.stderr, what=what, where=self.where)
        return result

    def _json(self, what: str, args: Sequence[str]) -> Any:
        result = self._run(what, args)
        for line in result.stdout_lines:
            if line.startswith(("[", "{")):
                try:
                    return json.loads(line)
                except ValueError as exc:
                    raise ResticError(
                        f"restic {what} printed invalid JSON at {self.where}"
                    ) from exc
        raise ResticError(f"restic {what} printed no JSON at {self.where}")

    # repository life

    def ensure(self) -> bool:
        """Open the repository, making it (version 2: compressed) when there is none.

        True when it was made now. ``WrongKey`` and ``Unavailable`` are never
        read as "absent": an existing repository is never initialised again.
        """
        try:
            self.snapshots()
            return False
        except RepositoryNotFound:
            pass
        self._run("init", ["init", "--repository-version", "2"])
        return True

    def snapshots(self, *, tags: Sequence[str] = ()) -> list[Snapshot]:
        """Every snapshot (optionally with all ``tags``), newest first."""
        # Reads take no lock: a read-only key (a PC restoring prod) cannot write one.
        args = ["snapshots", "--json", "--no-lock"] + [a for t in tags for a in ("--tag", _tag(t))]
        data = self._json("snapshots", args)
        if not isinstance(data, list):
            raise ResticError(f"restic snapshots printed no list at {self.where}")
        return sorted((parse_snapshot(s) for s in data), key=lambda s: s.time, reverse=True)

    # backups

    def backup_folder(
        self,
        path: str,
        *,
        tags: Sequence[str] = (),
        host: str,
        time: datetime | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BackupSummary:
        """Back up the folder ``path`` (as the runner sees it)."""
        args = ["backup", "--json", *self._backup_args(tags, host, time), checked_path(path)]
        return self._backup(args, on_progress=on_progress)

    def backup_stdin(
        self,
        stream: IO[bytes],
        *,
        filename: str,
        tags: Sequence[str] = (),
        host: str,
        time: datetime | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BackupSummary:
        """Back up a byte stream (a database dump) as the file ``/filename``."""
        if not re.match(r"^[A-Za-z0-9._-]{1,128}$", filename) or filename in (".", ".."):
            raise ResticError(f"invalid stdin file name {filename!r}")
        args = [
            "backup",
            "--json",
            "--stdin",
            "--stdin-filename",
            filename,
            *self._backup_args(tags, host, time),
        ]
        return self._backup(args, stdin=stream, on_progress=on_progress)

    def _backup_args(self, tags: Sequence[str], host: str, time: datetime | None) -> list[str]:
        if not TAG.match(host):
            raise ResticError(f"invalid host name {host!r}")
        args = ["--host", host, "--compression", "auto"]
        args += [a for t in tags for a in ("--tag", _tag(t))]
        if time is not None:
            # restic reads --time as local time; an aware time is converted to it.
            local = time.astimezone() if time.tzinfo else time
            args += ["--time", local.strftime("%Y-%m-%d %H:%M:%S")]
        return args

    def _backup(
        self,
        args: list[str],
        *,
        stdin: IO[bytes] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BackupSummary:
        result = self._run("backup", args, stdin=stdin)
        summary = parse_backup_lines(result.stdout_lines, on_progress)
        if summary.errors:
            raise ResticError(
                f"restic backup at {self.where} could not read: {'; '.join(summary.errors[:5])}"
            )
        return summary

    # retention and checks

    def forget(
        self, retention: Retention, *, tags: Sequence[str] = (), prune: bool = True
    ) -> ForgetResult:
        """Apply ``retention`` to each host/paths group (``--prune`` frees the space)."""
        args = ["forget", "--json", *retention.args()]
        args += [a for t in tags for a in ("--tag", _tag(t))]
        if prune:
            args.append("--prune")
        data = self._json("forget", args)
        kept: list[str] = []
        removed: list[str] = []
        for group in data if isinstance(data, list) else []:
            kept += [parse_snapshot(s).id for s in group.get("keep") or ()]
            removed += [parse_snapshot(s).id for s in group.get("remove") or ()]
        return ForgetResult(tuple(kept), tuple(removed))

    def forget_ids(self, snapshot_ids: Sequence[str], *, prune: bool = False) -> None:
        """Forget exactly these snapshots (the caller decided which: decide/retention.py)."""
        if snapshot_ids:
            args = ["forget", *[checked_id(i, full=True) for i in snapshot_ids]]
            self._run("forget", [*args, "--prune"] if prune else args)

    def prune(self) -> None:
        """Free what no snapshot uses any more."""
        self._run("prune", ["prune"])

    def unlock(self) -> None:
        """Remove stale locks only (restic's rule), never a live one."""
        self._run("unlock", ["unlock"])

    def check(self, *, read_data: bool = False, subset: str | None = None) -> None:
        """``restic check``; ``read_data`` reads every pack, ``subset`` ("10%", "1/7") some."""
        args = ["check"]
        if subset is not None:
            if not re.match(r"^(\d{1,3}(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$", subset):
                raise ResticError(f"invalid --read-data-subset {subset!r}")
            args += ["--read-data-subset", subset]
        elif read_data:
            args.append("--read-data")
        try:
            self._run("check", args)
        except (WrongKey, RepositoryNotFound, Unavailable):
            raise
        except ResticError as exc:
            raise IntegrityError(f"the repository at {self.where} is damaged: {exc}") from exc

    # reading back

    def dump(self, snapshot_id: str, path: str, out: IO[bytes]) -> None:
        """Write file ``path`` of the snapshot to ``out``."""
        args = ["dump", "--no-lock", checked_id(snapshot_id), checked_path(path)]
        self._run("dump", args, stdout=out)

    def ls(self, snapshot_id: str, path: str, on_node: Callable[[dict[str, Any]], None]) -> None:
        """Each node under ``path`` of the snapshot, as restic's ``ls --json`` prints it."""

        def line(text: str) -> None:
            try:
                node = json.loads(text)
            except ValueError:
                return
            if isinstance(node, dict) and node.get("struct_type") == "node":
                on_node(node)

        args = [
            "ls",
            "--json",
            "--no-lock",
            "--recursive",
            checked_id(snapshot_id),
            checked_path(path),
        ]
        self._run("ls", args, on_line=line)

    def restore(self, snapshot_id: str, *, target: Path, include: Sequence[str] = ()) -> None:
        """Restore the snapshot (or only ``include`` paths of it) under ``target``."""
        args = ["restore", checked_id(snapshot_id), "--target", str(target)]
        args += [a for p in include for a in ("--include", checked_path(p))]
        self._run("restore", args)

    # keys

    def list_keys(self) -> list[Key]:
        data = self._json("key list", ["key", "list", "--json"])
        return [
            Key(
                id=checked_id(k.get("id")),
                current=bool(k.get("current")),
                user=str(k.get("userName", "")),
                host=str(k.get("hostName", "")),
                created=str(k.get("created", "")),
            )
            for k in (data if isinstance(data, list) else [])
        ]

    def add_key(self, new_key: str) -> None:
        """Add ``new_key`` (rotation: add the new one, switch, remove the old one)."""
        if not new_key:
            raise ResticError("the new key is empty")
        with tempfile.NamedTemporaryFile("w", prefix="reconciler-key-") as handle:
            os.chmod(handle.name, 0o600)
            handle.write(new_key)
            handle.flush()
            self._run("key add", ["key", "add", "--new-password-file", handle.name])

    def remove_key(self, key_id: str) -> None:
        key_id = checked_id(key_id)
        if any(k.current and k.id.startswith(key_id) for k in self.list_keys()):
            raise ResticError(f"key {key_id} is the one in use: add and switch to another first")
        self._run("key remove", ["key", "remove", key_id])


def _tag(tag: str) -> str:
    if not TAG.match(tag) or "," in tag:
        raise ResticError(f"invalid tag {tag!r}")
    return tag
