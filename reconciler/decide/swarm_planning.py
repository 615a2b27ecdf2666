"""Planning in swarm mode: ``plan_swarm(desired, observed) -> Plan``, a pure function.

The same rules as on one engine (decide/planning.py), over Swarm's objects:

1. remove the Swarm services of ours that are no longer declared;
2. create missing networks (overlay, attachable) and volumes;
3. create the configs and secrets whose content no object holds yet;
4. per service: create it, or update it when its config hash differs (a
   rolling update when a task must be replaced, else a scale);
5. remove our configs and secrets that no service's spec names, nor its
   previous spec (the one a rollback goes back to);
6. remove our networks that are no longer declared.

Only objects labelled with the project are acted on; one of our names held by
an object that is not ours is a conflict that stops the pass. Volumes are
never removed.
"""

from __future__ import annotations

from typing import Literal

from reconciler import labels
from reconciler.decide.actions import (
    Action,
    Change,
    CreateSwarmObject,
    CreateSwarmService,
    Plan,
    RemoveContainer,
    RemoveNetwork,
    RemoveSwarmObject,
    RemoveSwarmService,
    UpdateSwarmService,
    render_changes,
)
from reconciler.decide.hashing import config_hash
from reconciler.decide.planning import changes_of, plan_networks, plan_volumes
from reconciler.decide.swarm_specs import deploy_of, object_name, service_name, task_hash
from reconciler.model.desired import DesiredState, FileGrant, ServiceSpec
from reconciler.model.observed import ObservedSwarm, ObservedSwarmService


def plan_swarm(desired: DesiredState, observed: ObservedSwarm) -> Plan:
    project = desired.project
    conflicts: list[str] = []
    ours = [s for s in observed.services if s.project == project]
    by_name = {s.name: s for s in observed.services}

    removals: list[Action] = [
        RemoveSwarmService(s, f"service {s.service!r} is no longer declared")
        for s in sorted(ours, key=lambda s: s.name)
        if s.service not in desired.services
    ]
    # A stack deployed before the engine joined a Swarm: the containers of the
    # services that now run as Swarm services go first (they hold the ports
    # those publish). Any other container of the project stays: the
    # reconciler's own, which runs beside the Swarm (docs/operations.md).
    removals += [
        RemoveContainer(c, f"service {c.service!r} now runs as a Swarm service")
        for c in sorted(observed.containers, key=lambda c: c.name)
        if c.project == project and not c.is_helper and c.service in desired.services
    ]

    infrastructure: list[Action] = []
    infrastructure += plan_networks(desired, observed, conflicts)
    infrastructure += plan_volumes(desired, observed, conflicts)

    objects = {o.name: o for o in observed.objects}
    wanted_objects: set[str] = set()
    for service in desired.services.values():
        for kind, grant in _grants(service):
            name = object_name(project, grant)
            if name in wanted_objects:
                continue
            wanted_objects.add(name)
            found = objects.get(name)
            if found is None:
                infrastructure.append(CreateSwarmObject(kind, name, grant, "new content"))
            elif found.labels.get(labels.PROJECT) != project or found.kind != kind:
                conflicts.append(
                    f"{found.kind} {name} exists but was not created by the reconciler for "
                    f"project {project!r}; remove it (docker {found.kind} rm {name})"
                )

    service_actions: list[Action] = []
    for service in desired.services.values():
        name = service_name(project, service.name)
        current = by_name.get(name)
        if current is not None and (current.project != project or current.service != service.name):
            owner = f"project {current.project!r}" if current.project else "no reconciler project"
            conflicts.append(
                f"Swarm service {name} exists but belongs to {owner}, so it is never touched; "
                f"remove it (docker service rm {name}) or choose another RECONCILER_PROJECT"
            )
            continue
        service_actions += _plan_service(service, current)

    referenced = {name for s in observed.services for name in s.objects}
    prunes: list[Action] = [
        RemoveSwarmObject(o, "no service uses it any more")
        for o in sorted(observed.objects, key=lambda o: o.name)
        if o.labels.get(labels.PROJECT) == project
        and o.name not in wanted_objects
        and o.name not in referenced
    ]

    declared_networks = {n.name for n in desired.networks.values()}
    network_removals: list[Action] = [
        RemoveNetwork(n, "network is no longer declared")
        for n in sorted(observed.networks, key=lambda n: n.name)
        if n.labels.get(labels.PROJECT) == project and n.name not in declared_networks
    ]
    return Plan(
        actions=tuple(removals + infrastructure + service_actions + prunes + network_removals),
        conflicts=tuple(conflicts),
    )


def _plan_service(service: ServiceSpec, current: ObservedSwarmService | None) -> list[Action]:
    wanted = config_hash(service)
    if current is None:
        return [CreateSwarmService(service, wanted, "no Swarm service")]
    deploy = deploy_of(service)
    replicas = deploy.replicas if deploy.mode == "replicated" else None
    if current.config_hash == wanted:
        if current.replicas == replicas:
            return []
        # Scaled by hand, or by a backup killed while its services were at 0.
        return [
            UpdateSwarmService(
                service,
                wanted,
                current,
                f"runs {current.replicas} replicas, {replicas} declared",
                replace_tasks=False,
            )
        ]
    changes = changes_of(service, current, wanted)
    replace_tasks = current.task_hash != task_hash(service)
    if not replace_tasks:
        # Only what Swarm changes without a new task: the replicas.
        changes = tuple(c for c in changes if c != Change("key", "deploy")) or (
            Change("key", "deploy.replicas"),
        )
    return [
        UpdateSwarmService(
            service,
            wanted,
            current,
            render_changes(changes),
            changes,
            replace_tasks=replace_tasks,
        )
    ]


def _grants(service: ServiceSpec) -> list[tuple[Literal["config", "secret"], FileGrant]]:
    return [("secret", g) for g in service.secrets] + [("config", g) for g in service.configs]
