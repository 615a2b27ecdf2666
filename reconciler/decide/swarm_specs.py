"""What Swarm is asked to run for a service: Docker's service spec, as data (pure).

Swarm mode deploys the same ``DesiredState`` as a stack would: one Swarm
service ``<project>_<service>`` per service, labelled like our containers
(project, service, commit, config hash and parts) plus Docker's own stack
label, so ``docker stack services <project>`` lists them. The task template
carries only a task hash: it changes exactly when a task must be replaced, so
every such update is a rolling update Swarm reports on (``UpdateStatus``),
while a change of replicas alone scales without restarting anything.

Secrets and configs become Swarm objects named ``<project>_<key>_<digest>``:
a new content is a new object (Swarm's objects cannot change), which changes
the service's spec and rolls its tasks. A secret's digest is keyed, as in the
config hash, so no name carries a plain digest of a short password.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from reconciler import labels as lbl
from reconciler.decide.hashing import config_hash as hash_of
from reconciler.model.desired import (
    FileGrant,
    HealthCheck,
    Mount,
    ServiceSpec,
    SwarmDeploy,
    UpdatePolicy,
    VolumeSpec,
)
from reconciler.redaction import secret_fingerprint

ObjectKind = Literal["config", "secret"]
# Docker's own label for the objects of a stack (``docker stack ls``, ``ps``, ``rm``).
STACK_NAMESPACE = "com.docker.stack.namespace"
# On the task template: changes exactly when a task must be replaced.
TASK_HASH = f"{lbl.PREFIX}.task-hash"
# On our configs and secrets: the top-level key they were made from.
OBJECT_KEY = f"{lbl.PREFIX}.object"
# Without a health check, a new task counts as failed if it stops this soon.
DEFAULT_MONITOR_S = 5.0
_NS = 1_000_000_000
_DIGITS = 12


def service_name(project: str, service: str) -> str:
    """Swarm's name of a service of a stack, as ``docker stack deploy`` gives it."""
    return f"{project}_{service}"


def object_name(project: str, grant: FileGrant) -> str:
    """``<project>_<key>_<digest>``: content-addressed, so a change is a new object."""
    digest = grant.content_hash
    if grant.sensitive:
        digest = secret_fingerprint(digest).removeprefix("hmac-sha256:")
    return f"{project}_{grant.name}_{digest[:_DIGITS]}"


def object_labels(project: str, grant: FileGrant) -> dict[str, str]:
    return {lbl.PROJECT: project, STACK_NAMESPACE: project, OBJECT_KEY: grant.name}


def deploy_of(service: ServiceSpec) -> SwarmDeploy:
    """The service's Swarm settings (the loader sets them on every service in swarm mode)."""
    return service.deploy if service.deploy is not None else SwarmDeploy()


def task_hash(service: ServiceSpec) -> str:
    """The config hash with the replicas left out: a scale replaces no task."""
    deploy = deploy_of(service).model_copy(update={"replicas": 0})
    return hash_of(service.model_copy(update={"deploy": deploy}))


def service_spec(
    service: ServiceSpec,
    *,
    project: str,
    commit: str,
    config_hash: str,
    parts: str,
    networks: dict[str, str],
    objects: dict[str, tuple[str, str]],
    volumes: Mapping[str, VolumeSpec] = MappingProxyType({}),
) -> dict[str, Any]:
    """Docker's ServiceSpec for ``service``.

    ``networks``: network name -> its id on the engine; ``objects``: object
    name (``object_name``) -> (id, name) of the Swarm config or secret;
    ``volumes``: the stack's volumes by Docker name.
    """
    deploy = deploy_of(service)
    labels = {
        **deploy.labels,
        lbl.PROJECT: project,
        lbl.SERVICE: service.name,
        lbl.COMMIT: commit,
        lbl.CONFIG_HASH: config_hash,
        lbl.CONFIG_PARTS: parts,
        STACK_NAMESPACE: project,
    }
    spec: dict[str, Any] = {
        "Name": service_name(project, service.name),
        "Labels": labels,
        "TaskTemplate": _task_template(service, project, networks, objects, volumes),
        "Mode": (
            {"Global": {}}
            if deploy.mode == "global"
            else {"Replicated": {"Replicas": deploy.replicas}}
        ),
        "UpdateConfig": _update_config(deploy.update, service.healthcheck),
        "RollbackConfig": _update_config(deploy.rollback, service.healthcheck),
        "EndpointSpec": _endpoint(service, deploy),
    }
    return spec


def _task_template(
    service: ServiceSpec,
    project: str,
    networks: dict[str, str],
    objects: dict[str, tuple[str, str]],
    volumes: Mapping[str, VolumeSpec],
) -> dict[str, Any]:
    deploy = deploy_of(service)
    container: dict[str, Any] = {
        "Image": service.image,
        "Labels": {**service.labels, TASK_HASH: task_hash(service)},
        "Env": [f"{k}={v}" for k, v in service.environment.items()],
        "Mounts": [_mount(m, project, volumes.get(m.source)) for m in service.mounts],
        "StopGracePeriod": int(service.stop_grace_period_s * _NS),
    }
    if service.entrypoint is not None:
        container["Command"] = list(service.entrypoint)
        if service.command is not None:
            container["Args"] = list(service.command)
    elif service.command is not None:
        # Swarm's Command replaces the entrypoint; Args alone keeps it, as Compose's command.
        container["Args"] = list(service.command)
    optional: dict[str, Any] = {
        "User": service.user,
        "Dir": service.working_dir,
        "Hostname": service.hostname,
        "StopSignal": service.stop_signal,
        "Init": service.init,
        "TTY": service.tty or None,
        "ReadOnly": service.read_only or None,
        "CapabilityAdd": list(service.cap_add) or None,
        "CapabilityDrop": list(service.cap_drop) or None,
        "Sysctls": dict(service.sysctls) or None,
        "Hosts": [_host_entry(h) for h in service.extra_hosts] or None,
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in service.ulimits]
        or None,
        "Healthcheck": _healthcheck(service.healthcheck),
    }
    container.update({k: v for k, v in optional.items() if v is not None})
    grants = [("secret", g) for g in service.secrets] + [("config", g) for g in service.configs]
    for kind, grant in grants:
        object_id, name = objects[object_name(project, grant)]
        reference = {
            f"{kind.capitalize()}ID": object_id,
            f"{kind.capitalize()}Name": name,
            "File": {
                "Name": grant.target,
                "UID": str(grant.uid),
                "GID": str(grant.gid),
                "Mode": grant.mode,
            },
        }
        container.setdefault("Secrets" if kind == "secret" else "Configs", []).append(reference)
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Networks": [
            {"Target": networks[n.name], "Aliases": [service.name, *n.aliases]}
            for n in service.networks
        ],
        "RestartPolicy": {
            "Condition": deploy.restart_policy.condition,
            "Delay": int(deploy.restart_policy.delay_s * _NS),
            "MaxAttempts": deploy.restart_policy.max_attempts or 0,
            "Window": int(deploy.restart_policy.window_s * _NS),
        },
        "Placement": _placement(deploy),
        "Resources": _resources(service),
    }
    if service.logging is not None:
        template["LogDriver"] = {
            "Name": service.logging.driver or "json-file",
            "Options": dict(service.logging.options),
        }
    return template


def _mount(mount: Mount, project: str, volume: VolumeSpec | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "Type": mount.type,
        "Source": mount.source,
        "Target": mount.target,
        "ReadOnly": mount.read_only,
    }
    if volume is not None and not volume.external:
        # A node that has no such volume yet makes it from these: the same
        # labels as ours, and the driver options (an NFS export is the same
        # files on every node only when each node mounts it so).
        spec["VolumeOptions"] = {
            "Labels": {**volume.labels, lbl.PROJECT: project, lbl.VOLUME: volume.key},
            "DriverConfig": {"Name": volume.driver, "Options": dict(volume.driver_opts)},
        }
    return spec


def _host_entry(entry: str) -> str:
    """Docker's ``host:ip`` (ExtraHosts) as Swarm's ``ip host`` (an /etc/hosts line)."""
    host, _, address = entry.partition(":")
    return f"{address} {host}"


def _healthcheck(check: HealthCheck | None) -> dict[str, Any] | None:
    if check is None:
        return None
    if check.disabled:
        return {"Test": ["NONE"]}
    return {
        "Test": list(check.test),
        "Interval": int(check.interval_s * _NS),
        "Timeout": int(check.timeout_s * _NS),
        "Retries": check.retries,
        "StartPeriod": int(check.start_period_s * _NS),
    }


def _placement(deploy: SwarmDeploy) -> dict[str, Any]:
    placement: dict[str, Any] = {}
    if deploy.constraints:
        placement["Constraints"] = list(deploy.constraints)
    if deploy.spread:
        placement["Preferences"] = [{"Spread": {"SpreadDescriptor": s}} for s in deploy.spread]
    if deploy.max_replicas_per_node is not None:
        placement["MaxReplicas"] = deploy.max_replicas_per_node
    return placement


def _resources(service: ServiceSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if service.mem_limit is not None:
        limits["MemoryBytes"] = service.mem_limit
    if service.cpus is not None:
        limits["NanoCPUs"] = int(service.cpus * _NS)
    if service.pids_limit is not None:
        limits["Pids"] = service.pids_limit
    resources: dict[str, Any] = {}
    if limits:
        resources["Limits"] = limits
    if service.mem_reservation is not None:
        resources["Reservations"] = {"MemoryBytes": service.mem_reservation}
    return resources


def _update_config(policy: UpdatePolicy, check: HealthCheck | None) -> dict[str, Any]:
    return {
        "Parallelism": policy.parallelism,
        "Delay": int(policy.delay_s * _NS),
        # rollback for updates (the loader accepts nothing else): a failed
        # version is rolled back and reported as a failed deploy.
        "FailureAction": policy.failure_action,
        "Monitor": int(monitor_s(policy, check) * _NS),
        "MaxFailureRatio": policy.max_failure_ratio,
        "Order": policy.order,
    }


def monitor_s(policy: UpdatePolicy, check: HealthCheck | None) -> float:
    """How long Swarm watches each new task for a failure.

    With a health check: long enough for it to turn unhealthy (its retries
    at its interval), so a version that fails its check a little after its
    start is rolled back, not kept.
    """
    if policy.monitor_s is not None:
        return policy.monitor_s
    if check is None or check.disabled:
        return DEFAULT_MONITOR_S
    return max(DEFAULT_MONITOR_S, check.interval_s * (check.retries + 1) + check.timeout_s)


def _endpoint(service: ServiceSpec, deploy: SwarmDeploy) -> dict[str, Any]:
    ports = [
        {
            "Protocol": p.protocol,
            "TargetPort": p.target,
            **({"PublishedPort": p.published} if p.published is not None else {}),
            "PublishMode": p.mode or "ingress",
        }
        for p in service.ports
    ]
    return {"Mode": deploy.endpoint_mode, "Ports": ports}
