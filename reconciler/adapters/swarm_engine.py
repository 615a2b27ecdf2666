"""A Swarm manager behind the pass: services, configs and secrets, overlay networks.

The same engine connection as ``DockerEngine`` (images, networks and volumes
are made the same way), plus what swarm mode needs. What to send is decided
in decide/swarm_specs.py; this module only sends it and reads back what
Swarm reports, as plain values. Library exceptions never leave it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors

from reconciler import labels as lbl
from reconciler.adapters.docker_engine import DockerEngine
from reconciler.decide.swarm_specs import STACK_NAMESPACE, TASK_HASH, ObjectKind
from reconciler.errors import EngineError
from reconciler.model.desired import NetworkSpec
from reconciler.model.observed import (
    ObservedSwarm,
    ObservedSwarmObject,
    ObservedSwarmService,
    ServiceProgress,
    TaskState,
)


class DockerSwarm(DockerEngine):
    """The Docker engine of a Swarm manager, reached through docker-py."""

    # -- observe ---------------------------------------------------------

    def observe_swarm(self, project: str) -> ObservedSwarm:
        # The engine's containers, networks and volumes as on one engine; then
        # the Swarm's services and objects.
        plain = self.observe(project)
        api = self._api
        with self._reading():
            raw_services = api.services()
            raw_configs = api.configs()
            raw_secrets = api.secrets()
        objects = [
            ObservedSwarmObject(
                kind=kind,
                id=o["ID"],
                name=(o.get("Spec") or {}).get("Name", ""),
                labels=dict((o.get("Spec") or {}).get("Labels") or {}),
            )
            for kind, listed in (("config", raw_configs), ("secret", raw_secrets))
            for o in listed or ()
        ]
        return ObservedSwarm(
            containers=tuple(c for c in plain.containers if c.project == project),
            services=tuple(_service(s) for s in raw_services or ()),
            objects=tuple(objects),
            networks=plain.networks,
            volumes=plain.volumes,
        )

    def network_ids(self, names: list[str]) -> dict[str, str]:
        """Network name -> id, for the networks a service spec names (by id in Swarm)."""
        with self._reading():
            listed = self._api.networks(names=names) if names else []
        return {n["Name"]: n["Id"] for n in listed if n["Name"] in names}

    def progress(self, service_id: str) -> ServiceProgress:
        api = self._api
        with self._changing(f"reading Swarm service {service_id[:12]}"):
            raw = api.inspect_service(service_id)
            tasks = api.tasks(filters={"service": service_id})
        update = raw.get("UpdateStatus") or {}
        mode = (raw.get("Spec") or {}).get("Mode") or {}
        replicated = mode.get("Replicated")
        return ServiceProgress(
            version=int((raw.get("Version") or {}).get("Index") or 0),
            update_state=update.get("State"),
            update_message=str(update.get("Message") or ""),
            update_started=update.get("StartedAt"),
            replicas=int(replicated.get("Replicas") or 0) if replicated is not None else None,
            tasks=tuple(_task(t) for t in tasks or ()),
        )

    def remaining_tasks(self, service_id: str) -> int:
        """How many task containers of a removed service are still on this engine
        (Swarm forgets the service, and its tasks, at once)."""
        with self._reading():
            return len(
                self._api.containers(
                    all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"}
                )
            )

    # -- change ----------------------------------------------------------

    def create_network(self, network: NetworkSpec, *, project: str) -> None:
        if network.driver != "overlay":
            # One engine's network (this adapter also drives plain engines).
            super().create_network(network, project=project)
            return
        api = self._api
        with self._changing(f"creating network {network.name}"):
            api.create_network(
                network.name,
                driver=network.driver,
                internal=network.internal,
                attachable=network.attachable,
                scope="swarm",
                labels={
                    **network.labels,
                    lbl.PROJECT: project,
                    lbl.NETWORK: network.key,
                    STACK_NAMESPACE: project,
                },
                check_duplicate=True,
            )

    def create_object(
        self, kind: ObjectKind, name: str, data: bytes, *, labels: dict[str, str]
    ) -> str:
        api = self._api
        with self._changing(f"creating {kind} {name}"):
            if kind == "secret":
                made = api.create_secret(name, data, labels=labels)
            else:
                made = api.create_config(name, data, labels=labels)
        return str(made["ID"])

    def remove_object(self, kind: ObjectKind, object_id: str) -> None:
        api = self._api
        try:
            with self._changing(f"removing {kind} {object_id[:12]}"):
                if kind == "secret":
                    api.remove_secret(object_id)
                else:
                    api.remove_config(object_id)
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return
            raise

    def object_ids(self) -> dict[str, tuple[str, str]]:
        """Object name -> (id, name), configs and secrets alike (names never collide
        here: ours carry their kind's content digest)."""
        with self._reading():
            listed = [*(self._api.configs() or ()), *(self._api.secrets() or ())]
        return {o["Spec"]["Name"]: (o["ID"], o["Spec"]["Name"]) for o in listed if o.get("Spec")}

    def create_service(self, spec: dict[str, Any]) -> str:
        api = self._api
        with self._changing(f"creating Swarm service {spec['Name']}"):
            made = api.create_service(
                spec["TaskTemplate"],
                name=spec["Name"],
                labels=spec["Labels"],
                mode=spec["Mode"],
                update_config=spec["UpdateConfig"],
                rollback_config=spec["RollbackConfig"],
                endpoint_spec=spec["EndpointSpec"],
            )
        return str(made["ID"])

    def update_service(self, service_id: str, version: int, spec: dict[str, Any]) -> None:
        api = self._api
        with self._changing(f"updating Swarm service {spec['Name']}"):
            api.update_service(
                service_id,
                version,
                task_template=spec["TaskTemplate"],
                name=spec["Name"],
                labels=spec["Labels"],
                mode=spec["Mode"],
                update_config=spec["UpdateConfig"],
                rollback_config=spec["RollbackConfig"],
                endpoint_spec=spec["EndpointSpec"],
            )

    def remove_service(self, service_id: str) -> None:
        api = self._api
        try:
            with self._changing(f"removing Swarm service {service_id[:12]}"):
                api.remove_service(service_id)
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return
            raise


def _service(raw: dict[str, Any]) -> ObservedSwarmService:
    spec = raw.get("Spec") or {}
    previous = raw.get("PreviousSpec") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    update = raw.get("UpdateStatus") or {}
    replicated = (spec.get("Mode") or {}).get("Replicated")
    return ObservedSwarmService(
        id=raw["ID"],
        name=spec.get("Name", ""),
        version=int((raw.get("Version") or {}).get("Index") or 0),
        labels=dict(spec.get("Labels") or {}),
        task_hash=(container.get("Labels") or {}).get(TASK_HASH),
        replicas=int(replicated.get("Replicas") or 0) if replicated is not None else None,
        objects=frozenset(_object_names(spec) | _object_names(previous)),
        update_state=update.get("State"),
        update_message=str(update.get("Message") or ""),
    )


def _object_names(spec: dict[str, Any]) -> set[str]:
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    names = {str(s.get("SecretName")) for s in container.get("Secrets") or ()}
    names |= {str(c.get("ConfigName")) for c in container.get("Configs") or ()}
    return names


def _task(raw: dict[str, Any]) -> TaskState:
    status = raw.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    return TaskState(
        id=raw.get("ID", ""),
        state=str(status.get("State") or ""),
        desired=str(raw.get("DesiredState") or ""),
        error=str(status.get("Err") or status.get("Message") or ""),
        container_id=str(container.get("ContainerID") or ""),
        node_id=str(raw.get("NodeID") or ""),
        task_hash=(((raw.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}).get(
            TASK_HASH
        ),
    )


# -- Swarm services as backups and restores see them ---------------------------
# Backups and restores name a service's container by DesiredState.container_of,
# which in swarm mode is the Swarm service; these find its task containers and
# stop it by scaling it to 0 (Swarm would start a stopped task again).

SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
# On a Swarm service a backup or restore scaled to 0: the replicas to go back to.
STOPPED_REPLICAS = f"{lbl.PREFIX}.stopped-replicas"
_TASKS_POLL_S = 0.5


def owned_swarm_service(
    client: docker.DockerClient, name: str, project: str | None
) -> dict[str, Any] | None:
    """The Swarm service ``name`` when it exists and is the project's, else None
    (also on an engine that is no Swarm manager)."""
    try:
        raw: dict[str, Any] = client.api.inspect_service(name)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        # 503: "This node is not a swarm manager"; 403: a socket proxy that
        # allows no SERVICES (docs/security.md): no Swarm service here.
        if exc.status_code in (403, 503):
            return None
        raise
    owner = ((raw.get("Spec") or {}).get("Labels") or {}).get(lbl.PROJECT)
    if project is not None and owner != project:
        return None
    return raw


def hosts_of_running_tasks(
    client: docker.DockerClient, names: Mapping[str, str], project: str
) -> tuple[str, dict[str, set[str]]]:
    """This node's host name, and for each of ``names`` ({key: Swarm service name})
    the host names of the other nodes its running tasks are on. Docker's errors
    pass through (the caller maps them)."""
    info = client.info()
    here_id = str((info.get("Swarm") or {}).get("NodeID") or "")
    here = _host_name(info.get("Name"))
    away: dict[str, set[str]] = {}
    hosts: dict[str, str] = {}
    for key, name in names.items():
        raw = owned_swarm_service(client, name, project)
        if raw is None:
            continue
        tasks = client.api.tasks(filters={"service": raw["ID"], "desired-state": "running"})
        for task in tasks:
            node = str(task.get("NodeID") or "")
            if not node or node == here_id:
                continue
            if node not in hosts:
                hosts[node] = _node_host(client, node)
            away.setdefault(key, set()).add(hosts[node])
    return here, away


def _node_host(client: docker.DockerClient, node: str) -> str:
    if not _NODE_ID.fullmatch(node):
        return "(a node with an invalid id)"
    try:
        raw = client.api.inspect_node(node)
    except docker.errors.APIError as exc:
        if exc.status_code in (403, 404):  # a proxy without NODES; a node just removed
            return node
        raise
    return _host_name(((raw.get("Description") or {}).get("Hostname")), fallback=node)


def _host_name(value: Any, *, fallback: str = "this node") -> str:
    # Read from the engine: shown in messages only, and only when it looks like a host name.
    text = str(value or "")
    return text if _HOST_NAME.fullmatch(text) else fallback


_NODE_ID = re.compile(r"[0-9a-z]{1,64}")
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


def task_containers(client: docker.DockerClient, name: str, *, running: bool) -> list[Any]:
    """The containers of the Swarm service ``name``'s tasks on this engine."""
    filters: dict[str, Any] = {"label": f"{SERVICE_NAME_LABEL}={name}"}
    if running:
        filters["status"] = "running"
    return list(client.containers.list(all=not running, filters=filters))


def task_container(client: docker.DockerClient, name: str, project: str | None) -> Any | None:
    """A task container of the project's Swarm service ``name``, a running one if any."""
    if owned_swarm_service(client, name, project) is None:
        return None
    found = task_containers(client, name, running=True) or task_containers(
        client, name, running=False
    )
    return found[0] if found else None


def scale_to_zero(client: docker.DockerClient, name: str, project: str, *, wait_s: float) -> bool:
    """Scale the project's Swarm service ``name`` to 0, remembering its replicas on
    it; True when it ran tasks. Returns once its task containers have stopped."""
    raw = owned_swarm_service(client, name, project)
    if raw is None:
        return False
    replicated = ((raw.get("Spec") or {}).get("Mode") or {}).get("Replicated")
    replicas = int((replicated or {}).get("Replicas") or 0)
    if replicated is None or replicas == 0:
        return False
    _set_replicas(client.api, raw, 0, {STOPPED_REPLICAS: str(replicas)})
    deadline = time.monotonic() + wait_s
    while task_containers(client, name, running=True) and time.monotonic() < deadline:
        time.sleep(_TASKS_POLL_S)
    return True


def scale_back(client: docker.DockerClient, name: str, project: str, *, wait_s: float) -> str:
    """Give the Swarm service ``name`` the replicas it had before ``scale_to_zero``;
    return the id of a running task container once there is one."""
    raw = owned_swarm_service(client, name, project)
    if raw is None:
        raise EngineError(f"Swarm service {name} is gone; the next pass (reconciler sync) makes it")
    labels = dict((raw.get("Spec") or {}).get("Labels") or {})
    remembered = labels.pop(STOPPED_REPLICAS, None)
    replicas = int(remembered) if remembered and remembered.isdigit() else 1
    _set_replicas(client.api, raw, replicas, {}, drop=(STOPPED_REPLICAS,))
    deadline = time.monotonic() + wait_s
    while True:
        running = task_containers(client, name, running=True)
        if running:
            return str(running[0].id)
        if time.monotonic() >= deadline:
            raise EngineError(f"Swarm service {name}: no task running {wait_s:.0f}s after scaling")
        time.sleep(_TASKS_POLL_S)


def _set_replicas(
    api: Any,
    raw: dict[str, Any],
    replicas: int,
    add: dict[str, str],
    *,
    drop: tuple[str, ...] = (),
) -> None:
    spec = raw["Spec"]
    labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k not in drop} | add
    try:
        api.update_service(
            raw["ID"],
            int(raw["Version"]["Index"]),
            task_template=spec.get("TaskTemplate"),
            name=spec.get("Name"),
            labels=labels,
            mode={"Replicated": {"Replicas": replicas}},
            update_config=spec.get("UpdateConfig"),
            rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"),
        )
    except docker.errors.APIError as exc:
        raise EngineError(f"scaling Swarm service {spec.get('Name')} to {replicas}: {exc}") from exc
