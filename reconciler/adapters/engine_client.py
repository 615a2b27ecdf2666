"""The Docker engine client as the flows hold it: one way to connect, one set of errors.

Only ``adapters/`` imports the Docker SDK (tests/unit/test_layering.py): the
backup and restore flows get a ``Client`` here, hand it to the adapters that
act (``stack_control``, ``volume_archive``, ``mariadb``, ``restic_helper``)
and catch ``ENGINE_ERRORS`` where a lost engine must not crash them.
"""

from __future__ import annotations

import socket
from typing import TypeAlias

import docker
import docker.errors
import requests

from reconciler.errors import ReconcilerError, Unavailable

Client: TypeAlias = docker.DockerClient
# What a call to the engine raises when it refuses or cannot be reached.
ENGINE_ERRORS: tuple[type[Exception], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
)
# What a flow reports as a failure rather than crashing on: one of ours, or the engine's.
REPORTED_ERRORS: tuple[type[Exception], ...] = (ReconcilerError, *ENGINE_ERRORS)


def connect() -> Client:
    """A client of the engine ``DOCKER_HOST`` names (the socket by default)."""
    try:
        return docker.from_env()
    except ENGINE_ERRORS as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc


def _own_container_attrs(client: Client) -> dict[str, object] | None:
    """This process's container, when it runs in a container of this engine.

    Docker names a container's host after its id, so the reconciler finds its
    own container without being told.
    """
    try:
        attrs = client.containers.get(socket.gethostname()).attrs
    except ENGINE_ERRORS:
        return None
    return attrs if isinstance(attrs, dict) else None


def own_image(client: Client) -> str | None:
    """The image this process runs from: one that is surely present on the engine."""
    attrs = _own_container_attrs(client) or {}
    config = attrs.get("Config")
    image = config.get("Image") if isinstance(config, dict) else None
    return str(image) if image else None


def own_network_mode(client: Client) -> str:
    """The network of this process's container, else the host's.

    A helper reaches the same S3 endpoint the reconciler does: from its
    container that is its network; from the host (tests, a PC) the host's.
    """
    attrs = _own_container_attrs(client) or {}
    host_config = attrs.get("HostConfig")
    mode = host_config.get("NetworkMode") if isinstance(host_config, dict) else None
    return str(mode) if mode else "host"
