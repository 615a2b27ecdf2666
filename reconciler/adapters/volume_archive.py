"""A named volume as a tar stream, out and in, through the Docker archive API.

The volume is mounted into a helper container that is created and never
started, from an image already present on the engine (the image of a service
that mounts the volume, or one the caller names, typically the reconciler's
own). Nothing is ever pulled: this works where no registry is reachable. The
engine reads and writes the files itself, so owners, modes, symlinks, mtimes
and empty folders survive. Helper containers carry the project and helper
labels and are removed on every path out.

The archive holds the volume's contents as ``./...`` entries, the same as
``tar -C VOLUME -c .``, so a user can unpack it by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import docker
import docker.errors
import requests
import urllib3.exceptions

from reconciler import labels
from reconciler.decide.archive_members import sanitized
from reconciler.errors import Unavailable, VolumeArchiveError

# Where the helper mounts the volume: a path no real image uses, so Docker's
# copy of image content into an empty volume never adds anything to it.
MOUNT_POINT = "/.reconciler-volume"
CHUNK = 1024 * 1024
TAR_BLOCK = 512


@contextmanager
def helper_container(
    client: docker.DockerClient,
    *,
    volume: str,
    image: str,
    project: str,
    purpose: str,
    read_only: bool,
) -> Iterator[Any]:
    """A created, never started container with ``volume`` at ``MOUNT_POINT``; always removed."""
    _require_volume(client, volume)
    _require_image(client, image)
    try:
        container = client.containers.create(
            image,
            # Never run; Docker still wants a command for images without one
            # (an imported rootfs has none).
            command=["reconciler-helper-never-started"],
            name=f"{project}-helper-{purpose}-{uuid.uuid4().hex[:8]}",
            labels={labels.PROJECT: project, labels.HELPER: purpose},
            volumes={volume: {"bind": MOUNT_POINT, "mode": "ro" if read_only else "rw"}},
            network_disabled=True,
        )
    except docker.errors.APIError as exc:
        raise VolumeArchiveError(
            f"cannot create a helper container for volume {volume} from {image}: {_why(exc)}"
        ) from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc
    try:
        yield container
    finally:
        with suppress(docker.errors.DockerException, requests.exceptions.RequestException):
            # v=True removes only the anonymous volumes the image's VOLUME lines
            # made for this helper (e.g. mariadb's); named volumes are never touched.
            container.remove(force=True, v=True)


@contextmanager
def read_volume(
    client: docker.DockerClient,
    *,
    volume: str,
    image: str,
    project: str,
    purpose: str = "backup",
) -> Iterator[Iterator[bytes]]:
    """The volume's contents as tar chunks, read while the context is open.

    ``purpose`` labels the helper: the process that holds the lock of that
    purpose removes the helpers a killed predecessor left (``remove_leftovers``).

    Raises ``VolumeArchiveError`` when the volume or image is missing, or when
    the engine's stream breaks or ends before the tar does.
    """
    with helper_container(
        client, volume=volume, image=image, project=project, purpose=purpose, read_only=True
    ) as helper:
        try:
            stream, _stat = helper.get_archive(f"{MOUNT_POINT}/.", chunk_size=CHUNK)
        except docker.errors.APIError as exc:
            raise VolumeArchiveError(f"cannot read volume {volume}: {_why(exc)}") from exc
        yield _checked_tar(stream, volume)


def _checked_tar(stream: Iterable[bytes], volume: str) -> Iterator[bytes]:
    """Pass the chunks on, failing when the stream breaks or the tar has no end.

    A tar ends with two zero blocks and is a whole number of blocks long; a
    stream cut short by the engine fails that test instead of making a
    backup that looks fine and cannot be restored.
    """
    total = 0
    tail = b""
    try:
        for chunk in stream:
            total += len(chunk)
            tail = (tail + chunk)[-2 * TAR_BLOCK :]
            yield chunk
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
        raise VolumeArchiveError(
            f"the engine's stream of volume {volume} broke after {total} bytes: {exc}"
        ) from exc
    if total % TAR_BLOCK or tail != bytes(2 * TAR_BLOCK):
        raise VolumeArchiveError(
            f"the engine's stream of volume {volume} ended after {total} bytes without the end "
            "of the tar: the archive is incomplete"
        )


def write_volume(
    client: docker.DockerClient,
    *,
    volume: str,
    image: str,
    project: str,
    chunks: Iterable[bytes],
    purpose: str = "restore",
    paths: tuple[str, ...] | None = None,
) -> None:
    """Unpack a tar stream (as ``read_volume`` makes) into the volume.

    Files of the same name are overwritten; other files in the volume stay:
    the caller empties the volume first when it wants an exact copy (or
    removes ``paths`` first, when it unpacks only those).
    """
    with helper_container(
        client, volume=volume, image=image, project=project, purpose=purpose, read_only=False
    ) as helper:
        try:
            ok = helper.put_archive(
                MOUNT_POINT,
                _chunked(sanitized(chunks, what=f"the archive for volume {volume}", paths=paths)),
            )
        except docker.errors.APIError as exc:
            raise VolumeArchiveError(f"cannot write volume {volume}: {_why(exc)}") from exc
        except (requests.exceptions.RequestException, OSError) as exc:
            raise VolumeArchiveError(f"writing volume {volume} broke: {exc}") from exc
        if not ok:
            raise VolumeArchiveError(f"the engine refused the archive for volume {volume}")


def _chunked(chunks: Iterable[bytes]) -> Iterator[bytes]:
    # requests sends a generator with chunked transfer encoding: the archive is
    # never held whole in memory.
    yield from chunks


def _require_volume(client: docker.DockerClient, volume: str) -> None:
    try:
        client.volumes.get(volume)
    except docker.errors.NotFound as exc:
        # Without this check Docker would create an empty volume of that name.
        raise VolumeArchiveError(f"volume {volume} does not exist on this engine") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc


def _require_image(client: docker.DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise VolumeArchiveError(
            f"image {image} is not on this engine; volume access uses images already present "
            "and never pulls: deploy the stack first, or name a present image"
        ) from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc


def _why(exc: docker.errors.APIError) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
