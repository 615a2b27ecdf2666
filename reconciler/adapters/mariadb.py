"""A consistent MariaDB dump streamed out of the running database container, and back in.

``mariadb-dump --single-transaction`` runs inside the service's own container
through ``docker exec`` (never a copy of live data files), with the root
credentials its environment defines the way the official image reads them:
``MARIADB_ROOT_PASSWORD_FILE``, ``MARIADB_ROOT_PASSWORD``, ``MYSQL_ROOT_PASSWORD``
(and ``MYSQL_ROOT_PASSWORD_FILE``), or socket authentication when none is set.
The password travels in the exec environment (``MYSQL_PWD``), never on a
command line that ``ps`` would show.

A server outside the stack (backup.yaml's ``external_databases``) is reached
the same way from a short-lived helper container (``database_helper.py``):
the client commands then carry ``--host``/``--port``/``--user`` and the TLS
options of a ``RemoteServer``, and dump only the databases it names.

A dump counts only when the command exited 0 (checked after the stream ends)
and the stream ends with mariadb-dump's ``-- Dump completed`` trailer.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.utils.socket import STDERR, frames_iter

from reconciler import labels
from reconciler.adapters.swarm_engine import task_container
from reconciler.errors import DatabaseError, Unavailable

DUMP_COMMAND = (
    "mariadb-dump",
    "--user=root",
    "--single-transaction",
    "--all-databases",
    "--routines",
    "--events",
    "--triggers",
    # Without the date the trailer is the same every day: restic stores an
    # unchanged database's dump as nothing new.
    "--skip-dump-date",
)
# --sandbox refuses the client's commands that reach the file system or the shell
# (\\!/system, \\./source, tee, pager with an argument): it came with MDEV-21778
# (CVE-2024-21096) in MariaDB 10.5.25, 10.6.18, 10.11.8, 11.0.6, 11.1.5, 11.2.4
# and 11.4.2 (May 2024), the same releases whose mariadb-dump writes
# "/*!999999\\- enable the sandbox mode */" first. --binary-mode makes the client
# read the dump as data (no backslash commands but \\C, \\- and DELIMITER).
# A client without --sandbox is refused, never used without it.
LOAD_COMMAND = (
    "mariadb",
    "--user=root",
    "--sandbox",
    "--binary-mode",
    "--default-character-set=utf8mb4",
)
SANDBOX_PROBE = ("mariadb", "--sandbox", "--binary-mode", "--version")
TRAILER = b"-- Dump completed"
CHUNK = 1024 * 1024
STDERR_KEEP = 4096
# Variables in the official image's order of preference; a *_FILE names a file
# inside the container holding the password.
PASSWORD_VARIABLES = (
    "MARIADB_ROOT_PASSWORD_FILE",
    "MARIADB_ROOT_PASSWORD",
    "MYSQL_ROOT_PASSWORD_FILE",
    "MYSQL_ROOT_PASSWORD",
)

# Where the helper holds the CA file of ``tls: verify``.
CA_PATH = "/tmp/reconciler-db-ca.pem"


@dataclass(frozen=True)
class RemoteServer:
    """A MariaDB outside the stack, as the client in a helper reaches it."""

    host: str
    port: int
    user: str
    databases: tuple[str, ...]
    tls: Literal["off", "required", "verify"] = "off"
    password: str = field(default="", repr=False)

    def options(self) -> list[str]:
        """The client's connection options (the password travels as ``MYSQL_PWD``)."""
        out = [
            f"--host={self.host}",
            f"--port={self.port}",
            f"--user={self.user}",
            "--protocol=TCP",
        ]
        if self.tls == "off":
            out.append("--skip-ssl")
        elif self.tls == "required":
            # Encrypted, the server's certificate not checked (a managed
            # service's self-signed one): ``verify`` is the one that checks.
            out += ["--ssl", "--skip-ssl-verify-server-cert"]
        else:
            out += ["--ssl", f"--ssl-ca={CA_PATH}", "--ssl-verify-server-cert"]
        return out

    def environment(self) -> dict[str, str]:
        return {"MYSQL_PWD": self.password}


def dump_command(remote: RemoteServer | None) -> list[str]:
    if remote is None:
        return list(DUMP_COMMAND)
    # Only the databases named: a shared server's others are not ours, and
    # its mysql schema (accounts) is never read.
    return [
        "mariadb-dump",
        *remote.options(),
        *[o for o in DUMP_COMMAND[1:] if o not in ("--user=root", "--all-databases")],
        "--databases",
        *remote.databases,
    ]


def client_command(remote: RemoteServer | None, *rest: str) -> list[str]:
    """``mariadb`` with the options to reach the server: root in the container, or ``remote``."""
    return ["mariadb", *(remote.options() if remote else ["--user=root"]), *rest]


def _container(client: docker.DockerClient, name: str, project: str | None) -> Any:
    swarm_task = False
    try:
        container = client.containers.get(name)
    except docker.errors.NotFound as exc:
        # Swarm mode: ``name`` is the project's Swarm service; dump from its task.
        try:
            task = task_container(client, name, project)
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as error:
            raise Unavailable(f"the Docker engine cannot be reached: {error}") from error
        if task is None:
            raise DatabaseError(
                f"database container {name} does not exist: deploy the stack (reconciler sync) "
                "and try again"
            ) from exc
        container, swarm_task = task, True
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc
    # A task's owner is its Swarm service, whose labels task_container checked.
    if project is not None and not swarm_task and container.labels.get(labels.PROJECT) != project:
        raise DatabaseError(
            f"container {name} does not carry the label {labels.PROJECT}={project}: it is not "
            "the project's database, and is never touched; rename or remove it"
        )
    if container.status != "running":
        raise DatabaseError(
            f"database container {name} is not running ({container.status}): the database "
            f"is down; start it (reconciler sync) and look at its logs (docker logs {name})"
        )
    return container


def credentials_environment(client: docker.DockerClient, container: Any) -> dict[str, str]:
    """``{"MYSQL_PWD": ...}`` from the container's environment, or ``{}`` for socket auth."""
    env: dict[str, str] = {}
    for item in container.attrs.get("Config", {}).get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    for variable in PASSWORD_VARIABLES:
        value = env.get(variable, "")
        if not value:
            continue
        if variable.endswith("_FILE"):
            password = _read_file(client, container, value, variable)
        else:
            password = value
        return {"MYSQL_PWD": password}
    return {}


def _read_file(client: docker.DockerClient, container: Any, path: str, variable: str) -> str:
    exit_code, output = container.exec_run(["cat", "--", path], demux=True)
    stdout, stderr = output if isinstance(output, tuple) else (output, b"")
    if exit_code != 0:
        message = (stderr or b"").decode(errors="replace").strip()
        raise DatabaseError(
            f"{variable} names {path}, which cannot be read in container {container.name}: "
            f"{message}"
        )
    # The official image reads it with $(< file): trailing newlines dropped.
    return (stdout or b"").decode().rstrip("\n")


@contextmanager
def dump_database(
    client: docker.DockerClient,
    *,
    container: str,
    project: str | None = None,
    remote: RemoteServer | None = None,
) -> Iterator[Iterator[bytes]]:
    """The SQL dump of every database in ``container``, as chunks.

    With ``remote``, ``container`` is a helper and the dump is of the
    databases ``remote`` names on that server.

    The iterator raises ``DatabaseError`` at its end when the dump failed
    (non-zero exit, or no trailer), so a consumer that stores the stream
    never mistakes a cut dump for a good one.
    """
    target = _container(client, container, project)
    environment = remote.environment() if remote else credentials_environment(client, target)
    api = client.api
    try:
        exec_id = api.exec_create(
            target.id, dump_command(remote), environment=environment, user="root"
        )["Id"]
        # A raw socket rather than stream=True: docker-py leaves the response
        # of a stream open, and we must close it whatever happens.
        sock = api.exec_start(exec_id, socket=True)
    except docker.errors.APIError as exc:
        raise DatabaseError(f"cannot run mariadb-dump in {container}: {exc.explanation}") from exc
    try:
        yield _checked_dump(api, exec_id, frames_iter(sock, False), container)
    finally:
        _close(sock)


def _close(sock: Any) -> None:
    """Close an exec's hijacked connection for good.

    docker-py hands out the ``SocketIO`` under an HTTP response: closing it
    alone leaves the socket open (and ``close`` forgets the socket), so take
    the socket first, close the response, the wrapper, then the socket.
    """
    raw = getattr(sock, "_sock", None)
    response = getattr(sock, "_response", None)
    with suppress(OSError, ValueError):
        if response is not None:
            response.close()
        sock.close()
        if raw is not None:
            raw.close()


def _checked_dump(api: Any, exec_id: str, frames: Any, container: str) -> Iterator[bytes]:
    tail = b""
    stderr = b""
    total = 0
    try:
        for stream_id, data in frames:
            if stream_id == STDERR:
                stderr = (stderr + data)[-STDERR_KEEP:]
            elif data:
                total += len(data)
                tail = (tail + data)[-256:]
                yield data
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
        raise DatabaseError(
            f"the dump stream from {container} broke after {total} bytes: {exc}"
        ) from exc
    exit_code = _exit_code(api, exec_id)
    message = stderr.decode(errors="replace").strip()
    if not message and total < 1024:
        # The engine reports an exec that cannot start (126, 127) on stdout;
        # that short text is no dump, so it is safe to show.
        message = tail.decode(errors="replace").strip()
    if exit_code != 0:
        raise DatabaseError(
            f"mariadb-dump in {container} failed (exit {exit_code}) after {total} bytes: "
            f"{message or 'no message'}; check that the database is up and the root "
            "credentials in its environment are right"
        )
    if TRAILER not in tail:
        raise DatabaseError(
            f"the dump from {container} is truncated ({total} bytes, no '-- Dump completed' "
            f"line): {message or 'no message'}"
        )


def _exit_code(api: Any, exec_id: str) -> int | None:
    # The stream can end a moment before the engine records the exit.
    for _ in range(50):
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            code = info.get("ExitCode")
            return int(code) if code is not None else None
        time.sleep(0.1)
    return None


def check_sandbox(client: docker.DockerClient, *, container: str) -> None:
    """Raise ``DatabaseError`` unless the ``mariadb`` client in ``container`` has ``--sandbox``."""
    target = _container(client, container, None)
    _check_sandbox(target, container)


def _check_sandbox(target: Any, container: str) -> None:
    try:
        code, output = target.exec_run(list(SANDBOX_PROBE), user="root")
    except docker.errors.APIError as exc:
        raise DatabaseError(f"cannot run mariadb in {container}: {exc.explanation}") from exc
    if code != 0:
        text = (output or b"").decode(errors="replace").strip()[:300]
        raise DatabaseError(
            f"the mariadb client in {container} has no --sandbox option ({text}): a dump is "
            "only loaded in sandbox mode, which MariaDB 10.5.25, 10.6.18, 10.11.8, 11.0.6, "
            "11.1.5, 11.2.4, 11.4.2 and later have; upgrade the database image and try again"
        )


def load_dump(
    client: docker.DockerClient,
    *,
    container: str,
    chunks: Iterable[bytes],
    project: str | None = None,
    remote: RemoteServer | None = None,
) -> None:
    """Feed an SQL dump into ``mariadb`` in ``container``; raise ``DatabaseError`` on failure.

    With ``project``, the container must carry that project's label. With
    ``remote``, ``container`` is a helper whose client loads into that server.
    """
    target = _container(client, container, project)
    _check_sandbox(target, container)
    environment = remote.environment() if remote else credentials_environment(client, target)
    command = client_command(remote, *LOAD_COMMAND[2:]) if remote else list(LOAD_COMMAND)
    api = client.api
    try:
        exec_id = api.exec_create(
            target.id, command, environment=environment, user="root", stdin=True
        )["Id"]
        sock = api.exec_start(exec_id, socket=True)
    except docker.errors.APIError as exc:
        raise DatabaseError(f"cannot run mariadb in {container}: {exc.explanation}") from exc
    raw: socket.socket = sock._sock
    output = bytearray()

    def drain() -> None:
        # Read while writing: a client that fills its output pipe would
        # otherwise stop reading its input and the two ends would wait forever.
        while True:
            try:
                data = raw.recv(65536)
            except OSError:
                return
            if not data:
                return
            output.extend(data)
            del output[:-STDERR_KEEP]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        for chunk in chunks:
            raw.sendall(chunk)
        raw.shutdown(socket.SHUT_WR)
        reader.join()
    except OSError as exc:
        raise DatabaseError(f"loading the dump into {container} broke: {exc}") from exc
    finally:
        _close(sock)
    exit_code = _exit_code(api, exec_id)
    if exit_code != 0:
        # The stream is multiplexed (8-byte frame headers); good enough for a message.
        text = bytes(output).decode(errors="replace")
        message = "".join(ch for ch in text if ch.isprintable() or ch == "\n").strip()
        raise DatabaseError(f"mariadb in {container} failed (exit {exit_code}): {message}")
