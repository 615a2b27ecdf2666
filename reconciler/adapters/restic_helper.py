"""restic where the volume is: a short-lived helper container that reads it as files.

A backup of a volume runs ``restic`` inside a helper container made from an
image already present on the engine (the reconciler's own image carries
restic; nothing is ever pulled). The volume is mounted read-only at
``/volume/<name>``: a fixed path per volume, so restic finds the previous
snapshot of the same volume as its parent and re-reads only files whose size,
mtime or inode changed. restic's cache lives in a named volume kept between
backups (``<project>-restic-cache`` by default), so an unchanged volume
costs a scan and a few small uploads.

The helper carries the project and helper labels, and is removed on every way
out (success, failure, timeout). The cache volume is the project's own (its
label, and ``dev.reconciler.cache``), never the helper label:
``remove_leftovers`` must not sweep it, and no other project's helper uses it,
so removing one project never pulls the cache from under another's backup.
Its name has a hyphen where Compose's volumes have an underscore: no volume
of the stack can be called that.

``network_mode`` is a parameter: tests whose S3 server listens on the host's
loopback run the helper with ``"host"``; production leaves Docker's default.
The key reaches restic as ``RESTIC_PASSWORD`` in the helper's environment
(visible to whoever may ``docker inspect``, who is root on the VM anyway), not
in its command line.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, Any

import docker
import docker.errors
import requests

from reconciler import labels
from reconciler.adapters.restic import Completed, checked_path
from reconciler.errors import ResticError, Unavailable

VOLUME_ROOT = "/volume"
CACHE_DIR = "/cache"
CACHE_VOLUME_SUFFIX = "-restic-cache"
CACHE_LABEL = f"{labels.PREFIX}.cache"
# What of restic's environment crosses into the helper: PATH, HOME and TMPDIR
# are the image's own.
NOT_PASSED = {"PATH", "HOME", "TMPDIR"}


def volume_path(volume: str) -> str:
    """Where the helper mounts ``volume``: the path restic records in the snapshot."""
    return checked_path(f"{VOLUME_ROOT}/{volume}")


@dataclass
class HelperRunner:
    """A ``Runner`` (see ``restic.py``) that runs restic in a helper container.

    ``volumes`` are mounted read-only at ``volume_path(name)``, or at
    ``volume_path(mount_names[name])``: a backup records a volume under its
    compose key, so that it restores into a project of another name (a PC's).
    ``binds`` maps host folders to the same path in the helper, read-write (a
    ``file://`` repository on the host); ``writable`` mounts volumes
    read-write where it says (a restore's staging volume).
    """

    client: docker.DockerClient
    image: str
    project: str
    volumes: Sequence[str] = ()
    binds: Sequence[str] = ()
    mount_names: Mapping[str, str] = field(default_factory=dict)
    # Volumes mounted read-write, at the path given: a restore's staging volume.
    writable: Mapping[str, str] = field(default_factory=dict)
    cache_volume: str = ""  # default: the project's own, <project>-restic-cache
    network_mode: str | None = None
    purpose: str = "restic-backup"
    binary: str = "restic"
    last_container: str = field(default="", init=False)

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
        if stdin is not None:
            raise ResticError("the restic helper reads volumes, not stdin: run stdin backups local")
        with _engine("preparing the restic helper"):
            for volume in [*self.volumes, *self.writable]:
                self.client.volumes.get(volume)  # never let Docker create an empty one
            self.client.images.get(self.image)
            self._cache()
        mounts: dict[str, dict[str, str]] = {
            v: {"bind": volume_path(self.mount_names.get(v, v)), "mode": "ro"} for v in self.volumes
        }
        for volume, path in self.writable.items():
            mounts[volume] = {"bind": checked_path(path), "mode": "rw"}
        mounts[self._cache_name] = {"bind": CACHE_DIR, "mode": "rw"}
        for path in self.binds:
            mounts[checked_path(path)] = {"bind": path, "mode": "rw"}
        options: dict[str, Any] = {}
        if self.network_mode:
            options["network_mode"] = self.network_mode
        name = f"{self.project}-helper-{self.purpose}-{uuid.uuid4().hex[:8]}"
        with _engine("creating the restic helper"):
            container = self.client.containers.create(
                self.image,
                entrypoint=[self.binary],
                command=[*args, "--cache-dir", CACHE_DIR],
                name=name,
                labels={labels.PROJECT: self.project, labels.HELPER: self.purpose},
                volumes=mounts,
                environment={k: v for k, v in env.items() if k not in NOT_PASSED},
                **options,
            )
        self.last_container = name
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with suppress(docker.errors.DockerException, requests.RequestException):
                container.kill()

        timer = threading.Timer(timeout_s, kill)
        timer.daemon = True
        try:
            with _engine("running the restic helper"):
                container.start()
                timer.start()
                output = _Output(stdout=stdout, on_line=on_line)
                output.take(container.logs(stream=True, follow=True, stdout=True, stderr=False))
                status = container.wait()
                # A followed log can end before its last lines when the container exits
                # (moby's json-file follower races the exit): restic's summary line, the
                # last it prints, went missing that way under load. Once the container has
                # stopped its log is complete, so what follow did not deliver is read now.
                output.take(
                    container.logs(stream=True, follow=False, stdout=True, stderr=False),
                    skip=output.received,
                )
                lines = output.finish()
                stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        finally:
            timer.cancel()
            with suppress(docker.errors.DockerException, requests.RequestException):
                container.remove(force=True, v=True)
        if timed_out.is_set():
            raise Unavailable(
                f"restic {args[0]} in the helper did not finish within {timeout_s:.0f} s"
            )
        return Completed(int(status.get("StatusCode", 1)), lines, stderr)

    @property
    def _cache_name(self) -> str:
        return self.cache_volume or f"{self.project}{CACHE_VOLUME_SUFFIX}"

    def _cache(self) -> None:
        try:
            self.client.volumes.get(self._cache_name)
        except docker.errors.NotFound:
            self.client.volumes.create(
                self._cache_name, labels={labels.PROJECT: self.project, CACHE_LABEL: "restic"}
            )


class _Output:
    """restic's stdout from the helper: to ``stdout`` as bytes, or as lines.

    ``take`` may be given a stream that starts again from the beginning with
    ``skip`` bytes already received: only what lies past them is delivered.
    """

    def __init__(self, *, stdout: IO[bytes] | None, on_line: Callable[[str], None] | None) -> None:
        self.stdout = stdout
        self.on_line = on_line
        self.received = 0
        self.lines: list[str] = []
        self._pending = b""

    def take(self, chunks: Iterable[bytes], *, skip: int = 0) -> None:
        for chunk in chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
            self.received += len(chunk)
            if self.stdout is not None:
                self.stdout.write(chunk)
                continue
            self._pending += chunk
            *complete, self._pending = self._pending.split(b"\n")
            for raw in complete:
                self._line(raw)

    def finish(self) -> list[str]:
        if self._pending and self.stdout is None:
            self._line(self._pending)
            self._pending = b""
        return self.lines

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        if self.on_line is not None:
            self.on_line(line)
        else:
            self.lines.append(line)


@contextmanager
def _engine(doing: str) -> Iterator[None]:
    """Docker's errors as ours: a missing volume or image is an error, the rest Unavailable."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise ResticError(
            f"{doing}: {getattr(exc, 'explanation', None) or exc} (volumes and images "
            "must be present: nothing is pulled or created)"
        ) from exc
    except docker.errors.APIError as exc:
        raise ResticError(f"{doing}: {getattr(exc, 'explanation', None) or exc}") from exc
    except (requests.RequestException, docker.errors.DockerException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached ({doing}): {exc}") from exc


def iter_helpers(client: docker.DockerClient, project: str) -> Iterator[str]:
    """Names of restic helpers of ``project`` still present (for tests and leftovers)."""
    selector = {"label": [f"{labels.PROJECT}={project}", labels.HELPER]}
    for raw in client.api.containers(all=True, filters=selector):
        yield raw["Names"][0].lstrip("/")
