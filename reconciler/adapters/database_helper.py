"""The short-lived helper through which a MariaDB outside the stack is dumped and loaded.

backup.yaml's ``external_databases`` name a server no container of the stack
runs (a database VM, a managed service). Its dumps and loads take the same
path as a service's (``mariadb.py``: ``docker exec`` of mariadb-dump or
mariadb, the password in the exec's environment, the stream checked and
screened the same way), inside a container made for the purpose: of an
image already on the engine that carries the MariaDB client (the entry's
``image``, else the stack's MariaDB service's; never pulled), idle until it
is removed, on the network the entry names (else the reconciler's own, so it
reaches what the reconciler reaches), with the CA file of ``tls: verify``
copied in. It is labelled like every helper, so the next holder of the lock
removes one a killed run left.
"""

from __future__ import annotations

import io
import secrets
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import docker
import docker.errors
import requests

from reconciler import labels
from reconciler.adapters.mariadb import CA_PATH, RemoteServer
from reconciler.adapters.stack_control import present_image
from reconciler.errors import DatabaseError, Unavailable
from reconciler.model.backup_policy import ExternalDatabase, is_mariadb_service
from reconciler.model.desired import DesiredState
from reconciler.redaction import register_secret


@dataclass(frozen=True)
class ExternalTarget:
    """An external database as a helper reaches it: image, network, server."""

    name: str  # the part's name (backup.yaml's ``name``)
    image: str
    network_mode: str
    remote: RemoteServer
    ca_pem: str = field(default="", repr=False)


def external_target(
    entry: ExternalDatabase, desired: DesiredState, *, own_network_mode: str
) -> ExternalTarget:
    """Where and with what the helper of ``entry`` runs (backup.yaml was checked already)."""
    image = entry.image or next(
        (s.image for s in desired.services.values() if is_mariadb_service(s)), ""
    )
    network = desired.networks[entry.network].name if entry.network else own_network_mode
    return ExternalTarget(
        name=entry.name,
        image=image,
        network_mode=network,
        remote=RemoteServer(
            host=entry.host,
            port=entry.port,
            user=entry.user,
            databases=entry.databases,
            tls=entry.tls,
            password=entry.password,
        ),
        ca_pem=entry.ca_pem,
    )


@contextmanager
def helper(
    client: docker.DockerClient, *, project: str, target: ExternalTarget, purpose: str
) -> Iterator[str]:
    """A running helper for ``target``; its name. Removed on every way out."""
    # From here on the password never reaches a log line or a message.
    register_secret(target.remote.password)
    what = f"database {target.name} ({target.remote.host}:{target.remote.port})"
    if not target.image or present_image(client, [target.image]) is None:
        raise DatabaseError(
            f"{what}: the helper's image {target.image or '(none)'} is not on this engine and "
            "is never pulled: pull it once (docker pull IMAGE), or name one that is present "
            "with image: in backup.yaml"
        )
    name = f"{project}-helper-{purpose}-db-{secrets.token_hex(4)}"
    try:
        container = client.containers.create(
            target.image,
            entrypoint=["sleep", "infinity"],
            command=[],
            name=name,
            labels={labels.PROJECT: project, labels.HELPER: purpose},
            network_mode=target.network_mode,
        )
    except docker.errors.APIError as exc:
        raise DatabaseError(f"{what}: cannot make its helper: {exc.explanation}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc
    try:
        try:
            if target.ca_pem:
                container.put_archive("/", _ca_archive(target.ca_pem))
            container.start()
        except docker.errors.APIError as exc:
            raise DatabaseError(f"{what}: its helper does not start: {exc.explanation}") from exc
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc
        yield name
    finally:
        with suppress(docker.errors.DockerException, requests.RequestException):
            # v=True: the anonymous volume a MariaDB image's VOLUME line made for it.
            container.remove(force=True, v=True)


def _ca_archive(pem: str) -> bytes:
    data = pem.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(CA_PATH.lstrip("/"))
        info.size = len(data)
        info.mode = 0o644
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
