"""What a restore (and the restore drill) does to the engine besides tar streams and dumps.

Stop and start a project's service containers, empty a volume, list and drop
databases, run scratch volumes and a scratch MariaDB container. Everything runs
on images already present (the service's own, or another of the desired
state): nothing is ever pulled. Helper and scratch objects carry the project
and helper labels, so the pass never mistakes them for services and the test
fixtures' clean-up finds them.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests

from reconciler import labels
from reconciler.adapters import swarm_engine
from reconciler.adapters.mariadb import RemoteServer, client_command, credentials_environment
from reconciler.adapters.volume_archive import MOUNT_POINT
from reconciler.decide import swarm_placement
from reconciler.errors import DatabaseError, StackError, Unavailable
from reconciler.logs import event
from reconciler.model.desired import DesiredState

# Databases a dump of --all-databases may hold that belong to the server itself.
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
# Every entry of the volume, dot-files included, without touching the mount point itself.
_EMPTY_SCRIPT = (
    f'cd "{MOUNT_POINT}" && rm -rf -- ./* ./.[!.]* ./..?* && [ -z "$(ls -A "{MOUNT_POINT}")" ]'
)

# "$@" are paths relative to the volume, checked by the restore request's model
# (no '..', not absolute); `--` keeps a name starting with '-' a name.
_REMOVE_SCRIPT = (
    f'cd "{MOUNT_POINT}" && for p in "$@"; do rm -rf -- "./$p" || exit 1; '
    '[ ! -e "./$p" ] && [ ! -L "./$p" ] || exit 1; done'
)


@contextmanager
def _engine_call(what: str) -> Iterator[None]:
    """Map docker-py exceptions: a refusal names ``what``; a lost engine is Unavailable."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise StackError(f"{what}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached ({what}): {exc}") from exc


def present_image(client: docker.DockerClient, candidates: Iterable[str]) -> str | None:
    """The first of ``candidates`` already on the engine (never pulls)."""
    for image in candidates:
        try:
            client.images.get(image)
            return image
        except docker.errors.ImageNotFound:
            continue
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc
    return None


def owned_container(client: docker.DockerClient, project: str, name: str) -> Any | None:
    """The container ``name`` (a service's: ``DesiredState.container_of``) when it exists
    and carries the project label, else None."""
    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        # Swarm mode: ``name`` is the Swarm service; its task container is the one.
        with _engine_call(f"reading Swarm service {name}"):
            return swarm_engine.task_container(client, name, project)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc
    if container.labels.get(labels.PROJECT) != project:
        return None  # never touch what we do not own
    return container


# How long a Swarm service scaled to 0 or back may take beyond its grace period.
SWARM_SCALE_WAIT_S = 120.0


def _service_object(client: docker.DockerClient, project: str, name: str) -> tuple[Any, bool]:
    """The project's container ``name`` (None when it is missing or not ours), and
    whether ``name`` is the project's Swarm service instead (swarm mode). One
    engine's services cost one lookup, as before swarm mode."""
    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        return None, _swarm_service(client, project, name)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc
    return (container if container.labels.get(labels.PROJECT) == project else None), False


def _swarm_service(client: docker.DockerClient, project: str, name: str) -> bool:
    with _engine_call(f"reading Swarm service {name}"):
        return swarm_engine.owned_swarm_service(client, name, project) is not None


def volumes_elsewhere(
    client: docker.DockerClient, desired: DesiredState, volume_keys: Sequence[str]
) -> list[str]:
    """In swarm mode, why a volume of ``volume_keys`` is not on this node
    (decide/swarm_placement.py); always empty on one engine."""
    if desired.engine_mode != "swarm":
        return []
    services = swarm_placement.services_to_ask(desired, volume_keys)
    if not services:
        return []
    with _engine_call("asking the Swarm which nodes run the services of the volumes"):
        here, away = swarm_engine.hosts_of_running_tasks(
            client, {s: desired.container_of(s) for s in services}, desired.project
        )
    return swarm_placement.volumes_elsewhere(desired, volume_keys, here=here, task_hosts=away)


def stop_service(client: docker.DockerClient, project: str, name: str, *, grace_s: float) -> bool:
    """Stop the service's container ``name`` if it runs; True when it was stopped here.

    In swarm mode (``name`` a Swarm service) it is scaled to 0: Swarm would
    start a stopped task again."""
    container, swarm = _service_object(client, project, name)
    if swarm:
        with _engine_call(f"scaling Swarm service {name} to 0"):
            return swarm_engine.scale_to_zero(
                client, name, project, wait_s=grace_s + SWARM_SCALE_WAIT_S
            )
    if container is None or container.status != "running":
        return False
    with _engine_call(f"stopping {container.name}"):
        container.stop(timeout=max(1, int(grace_s)))
    return True


def start_service(client: docker.DockerClient, project: str, name: str) -> str:
    """Start the service's container ``name``; return its id (in swarm mode: scale the
    Swarm service back, and return a running task container's)."""
    container, swarm = _service_object(client, project, name)
    if swarm:
        with _engine_call(f"scaling Swarm service {name} back"):
            return swarm_engine.scale_back(client, name, project, wait_s=SWARM_SCALE_WAIT_S)
    if container is None:
        raise StackError(
            f"container {name} is gone; the next pass (reconciler sync) creates it again"
        )
    with _engine_call(f"starting {container.name}"):
        container.start()
    return str(container.id)


@dataclass(frozen=True)
class StoppedRun:
    """A container a flow stops: which run of it (its start time), and its grace period."""

    id: str
    name: str
    started_at: str  # State.StartedAt of the run being stopped
    grace_s: int


@contextmanager
def services_stopped(
    client: docker.DockerClient,
    *,
    project: str,
    services: Iterable[tuple[str, str, float]],
    before_stop: Callable[[StoppedRun], None],
    on_all_started: Callable[[], None],
) -> Iterator[None]:
    """Stop the running containers of ``services`` (service, container name, grace); start
    them on every way out.

    ``before_stop`` hears of each before the engine is asked to stop it (a
    journal writes it down, so that when this process dies the next holder of
    the pass lock starts it again); ``on_all_started`` once all run again.
    Never a container the project does not own, nor one that was not running.
    """
    stopped: list[Any] = []
    scaled: list[str] = []  # Swarm services at 0 (not journaled: a pass scales them back)
    failed_to_start = False
    try:
        for service, name, grace in services:
            container, swarm = _service_object(client, project, name)
            if swarm:
                event("backup.stop_service", service=service)
                # Recorded before the engine is asked, so every way out scales it back.
                scaled.append(name)
                with _engine_call(f"scaling Swarm service {name} to 0"):
                    swarm_engine.scale_to_zero(
                        client, name, project, wait_s=grace + SWARM_SCALE_WAIT_S
                    )
                continue
            if container is None or container.status != "running":
                continue
            event("backup.stop_service", service=service)
            grace_s = max(1, int(grace))
            with _engine_call(f"stopping {container.name}"):
                container.reload()  # the start time of the run about to be stopped
                state = container.attrs.get("State") or {}
                before_stop(
                    StoppedRun(
                        str(container.id),
                        str(container.name),
                        str(state.get("StartedAt", "")),
                        grace_s,
                    )
                )
                stopped.append(container)
                container.stop(timeout=grace_s)
        yield
    finally:
        for name in reversed(scaled):
            try:
                start_service(client, project, name)
                event("backup.start_service", container=name)
            except (StackError, Unavailable) as exc:
                failed_to_start = True
                event(
                    "backup.start_service_failed",
                    level=logging.ERROR,
                    container=name,
                    error=str(exc),
                )
        for container in reversed(stopped):
            try:
                container.start()
                event("backup.start_service", container=container.name)
            except (docker.errors.DockerException, requests.RequestException) as exc:
                failed_to_start = True
                event(
                    "backup.start_service_failed",
                    level=logging.ERROR,
                    container=container.name,
                    error=str(exc),
                )
        if not failed_to_start:
            on_all_started()


def restart_stopped_run(client: docker.DockerClient, run: StoppedRun) -> bool:
    """Start again a container a killed flow stopped, unless it runs a newer run already.

    On a container whose stop is still in flight this waits for the stop to
    end first. False when there was nothing to do (gone, or started since).
    """
    try:
        container = client.containers.get(run.id)
        state = container.attrs.get("State") or {}
        if state.get("Running") and state.get("StartedAt") != run.started_at:
            return False  # started again already: by the flow itself before it died
        event("backup.recover_stop", container=run.name, running=bool(state.get("Running")))
        container.stop(timeout=run.grace_s)
        container.start()
    except docker.errors.NotFound:
        return False  # removed since (a pass recreates it if it is desired)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(
            f"cannot start {run.name} again, which a killed backup stopped: {exc}"
        ) from exc
    return True


def volume_exists(client: docker.DockerClient, volume: str) -> bool:
    try:
        client.volumes.get(volume)
        return True
    except docker.errors.NotFound:
        return False
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc


def empty_volume(
    client: docker.DockerClient,
    *,
    volume: str,
    image: str,
    project: str,
    paths: tuple[str, ...] | None = None,
) -> None:
    """Delete everything in ``volume`` (or only ``paths`` in it) with a helper of ``image``.

    The archive API can add files but not remove them, so an exact restore
    empties the volume first (a partial one removes the paths it brings back):
    one helper container, run as root, removed after; it needs ``sh``. Paths
    go to the script as arguments, never into its text.
    """
    script, arguments = (_EMPTY_SCRIPT, []) if paths is None else (_REMOVE_SCRIPT, list(paths))
    run_script(
        client,
        image=image,
        project=project,
        purpose="restore-empty",
        mounts={volume: (MOUNT_POINT, "rw")},
        script=script,
        arguments=arguments,
        doing=f"emptying volume {volume} with a helper of {image}",
    )


def run_script(
    client: docker.DockerClient,
    *,
    image: str,
    project: str,
    purpose: str,
    mounts: dict[str, tuple[str, str]],
    script: str,
    arguments: list[str],
    doing: str,
    timeout_s: float = 3600,
) -> bytes:
    """Run ``sh -c script`` in a helper of ``image`` with ``mounts`` (volume: (path, mode)).

    As root, without a network, removed on every way out; labelled with
    ``purpose`` so that the holder of its lock removes what a killed run left
    (``remove_leftovers``). ``arguments`` reach the script as ``$1``...,
    never its text. Its standard output, once it exited 0; else ``StackError``
    with the end of what it wrote.
    """
    name = f"{project}-helper-{purpose}-{secrets.token_hex(4)}"
    with _engine_call(doing):
        container = client.containers.create(
            image,
            entrypoint=["sh", "-c", script],
            command=["sh", *arguments],
            user="0:0",
            name=name,
            labels={labels.PROJECT: project, labels.HELPER: purpose},
            volumes={v: {"bind": path, "mode": mode} for v, (path, mode) in mounts.items()},
            network_disabled=True,
        )
    try:
        with _engine_call(doing):
            container.start()
            result = container.wait(timeout=timeout_s)
            code = int(result.get("StatusCode", -1))
            if code != 0:
                logs = container.logs(stdout=False, stderr=True, tail=5)
                text = logs.decode(errors="replace").strip()
                raise StackError(f"{doing} failed (exit {code}): {text or 'no output'}")
            return bytes(container.logs(stdout=True, stderr=False))
    finally:
        with suppress(docker.errors.DockerException, requests.RequestException):
            # v=True removes only the anonymous volumes the image's VOLUME lines
            # made for this helper (e.g. mariadb's); named volumes are never touched.
            container.remove(force=True, v=True)


def _exec_sql(
    client: docker.DockerClient, container: Any, sql: str, remote: RemoteServer | None = None
) -> str:
    environment = remote.environment() if remote else credentials_environment(client, container)
    with _engine_call(f"running SQL in {container.name}"):
        code, output = container.exec_run(
            client_command(remote, "--batch", "--skip-column-names", "-e", sql),
            environment=environment,
            user="root",
            demux=True,
        )
    stdout, stderr = output if isinstance(output, tuple) else (output, b"")
    if code != 0:
        message = (stderr or b"").decode(errors="replace").strip()
        raise DatabaseError(f"mariadb in {container.name} failed (exit {code}): {message}")
    return (stdout or b"").decode(errors="replace")


def _running(client: docker.DockerClient, name: str) -> Any:
    try:
        container = client.containers.get(name)
    except docker.errors.NotFound as exc:
        with _engine_call(f"reading Swarm service {name}"):
            container = swarm_engine.task_container(client, name, None)
        if container is None:
            raise DatabaseError(f"database container {name} does not exist") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(f"the Docker engine cannot be reached: {exc}") from exc
    if container.status != "running":
        raise DatabaseError(f"database container {name} is not running ({container.status})")
    return container


def user_databases(
    client: docker.DockerClient, container: str, remote: RemoteServer | None = None
) -> list[str]:
    """The databases of the server in ``container``, system ones left out.

    With ``remote`` (``container`` is then its helper): only those it names,
    since the other databases of a shared server are not this stack's.
    """
    # Hex, one name a line: a name may hold spaces, tabs, backticks or newlines,
    # which SHOW DATABASES prints as they are (or escaped, in batch mode).
    output = _exec_sql(
        client,
        _running(client, container),
        "SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
        remote,
    )
    names = [_database_name(line.strip()) for line in output.splitlines() if line.strip()]
    if remote is not None:
        return [n for n in names if n in remote.databases]
    return [n for n in names if n not in SYSTEM_DATABASES]


def _database_name(hexed: str) -> str:
    """A name from the server, checked before it names anything: UTF-8, 1-64 characters."""
    try:
        name = bytes.fromhex(hexed).decode("utf-8")
    except ValueError as exc:
        raise DatabaseError(
            f"the server listed a database name that is not UTF-8: {hexed}"
        ) from exc
    if not 1 <= len(name) <= 64 or "\x00" in name:
        raise DatabaseError(f"the server listed a database name that is not valid: {name!r}")
    return name


def quote_name(name: str) -> str:
    """``name`` as a MariaDB identifier: in backticks, a backtick doubled."""
    if not 1 <= len(name) <= 64 or "\x00" in name:
        raise DatabaseError(f"not a valid database name: {name!r}")
    return "`" + name.replace("`", "``") + "`"


def drop_sql(databases: Iterable[str]) -> bytes:
    """SQL that drops ``databases``: prepended to a dump, so a load replaces exactly."""
    quoted = [quote_name(name) for name in databases]
    return "".join(f"DROP DATABASE IF EXISTS {q};\n" for q in quoted).encode()


def table_counts(client: docker.DockerClient, container: str) -> dict[str, int]:
    """``{database: number of base tables}`` for every user database."""
    output = _exec_sql(
        client,
        _running(client, container),
        "SELECT table_schema, COUNT(*) FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' GROUP BY table_schema",
    )
    counts: dict[str, int] = {}
    for line in output.splitlines():
        schema, _, count = line.partition("\t")
        if schema and schema not in SYSTEM_DATABASES:
            counts[schema] = int(count)
    return counts


# -- scratch objects for the restore drill --------------------------------------------


def scratch_volume(client: docker.DockerClient, *, name: str, project: str) -> str:
    return labelled_volume(client, name=name, project=project, purpose="drill")


def labelled_volume(client: docker.DockerClient, *, name: str, project: str, purpose: str) -> str:
    """A new volume carrying the project and helper labels (swept by ``remove_leftovers``)."""
    with _engine_call(f"creating volume {name}"):
        client.volumes.create(name, labels={labels.PROJECT: project, labels.HELPER: purpose})
    return name


def remove_volume(client: docker.DockerClient, name: str) -> None:
    with suppress(docker.errors.DockerException, requests.RequestException):
        client.volumes.get(name).remove(force=True)


def scratch_database(
    client: docker.DockerClient, *, name: str, image: str, project: str, timeout_s: float = 180
) -> str:
    """Start a MariaDB container of ``image`` with an empty data dir; wait until it answers."""
    password = secrets.token_urlsafe(18)
    with _engine_call(f"starting scratch database {name} from {image}"):
        container = client.containers.run(
            image,
            name=name,
            detach=True,
            environment={"MARIADB_ROOT_PASSWORD": password},
            labels={labels.PROJECT: project, labels.HELPER: "drill"},
            # No network (the entrypoint fails with network_disabled, which
            # also drops the hostname): the dump is loaded over docker exec.
            network_mode="none",
        )
    deadline = time.monotonic() + timeout_s
    while True:
        container.reload()
        if container.status in ("exited", "dead"):
            logs = container.logs(tail=10).decode(errors="replace").strip()
            raise StackError(f"scratch database {name} exited: {logs}")
        # The image's entrypoint first runs a temporary server for its set-up,
        # then restarts it: ready means the final server answers, which is what
        # healthcheck.sh checks (its socket differs from the set-up server's).
        code, _ = container.exec_run(["healthcheck.sh", "--connect", "--innodb_initialized"])
        if code == 0:
            return name
        if time.monotonic() > deadline:
            raise StackError(f"scratch database {name} did not answer in {timeout_s:.0f}s")
        time.sleep(1)


def remove_container(client: docker.DockerClient, name: str) -> None:
    with suppress(docker.errors.DockerException, requests.RequestException):
        client.containers.get(name).remove(force=True, v=True)


def remove_leftovers(client: docker.DockerClient, *, project: str, purposes: set[str]) -> list[str]:
    """Remove helper containers and scratch volumes of ``purposes`` a killed process left.

    Call only while holding the lock that keeps those purposes to one process.
    """
    removed: list[str] = []
    selector = {"label": [f"{labels.PROJECT}={project}", labels.HELPER]}
    with _engine_call("listing left-over helpers"):
        containers = client.api.containers(all=True, filters=selector)
        volumes = client.api.volumes(filters=selector).get("Volumes") or []
    for raw in containers:
        if (raw.get("Labels") or {}).get(labels.HELPER) in purposes:
            with suppress(docker.errors.DockerException, requests.RequestException):
                # v=True removes only the anonymous volumes the image's VOLUME lines
                # made for this helper (e.g. mariadb's); named volumes are never touched.
                client.api.remove_container(raw["Id"], force=True, v=True)
                removed.append(raw["Names"][0].lstrip("/"))
    for raw in volumes:
        if (raw.get("Labels") or {}).get(labels.HELPER) in purposes:
            with suppress(docker.errors.DockerException, requests.RequestException):
                client.api.remove_volume(raw["Name"], force=True)
                removed.append(raw["Name"])
    return removed
