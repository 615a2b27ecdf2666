"""Planning: ``plan(desired, observed) -> Plan``, a pure function.

The plan is an ordered list of typed actions, each with its reason:

1. remove containers of services no longer declared (frees their ports first);
2. create missing networks and volumes;
3. per service, in depends_on order: remove leftovers of an interrupted
   recreate, then create, recreate (config hash differs, the image reference
   now names another image than the container runs, or a dependency with
   ``restart: true`` is recreated) or start; a recreate names what changed,
   from the parts label on the container (decide/hashing.py ``config_parts``);
4. remove our networks that are no longer declared.

Only objects labelled with the project are ever acted on. Anything else in the
way (a container, network or volume with one of our names but not our labels)
is a conflict that stops the pass before it changes anything. Volumes are never
removed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Iterable

from reconciler import labels
from reconciler.decide.actions import (
    Action,
    Change,
    CreateNetwork,
    CreateService,
    CreateVolume,
    Plan,
    RecreateService,
    RemoveContainer,
    RemoveNetwork,
    StartService,
    render_changes,
)
from reconciler.decide.hashing import (
    FILE_PREFIX,
    changed_parts,
    config_hash,
    config_parts,
    decode_parts,
)
from reconciler.model.desired import DesiredState, ServiceSpec, container_name_of
from reconciler.model.observed import (
    Observed,
    ObservedContainer,
    ObservedSwarm,
    ObservedSwarmService,
)


def plan(desired: DesiredState, observed: Observed) -> Plan:
    project = desired.project
    conflicts: list[str] = []
    ours = [c for c in observed.containers if c.project == project and not c.is_helper]
    by_service: dict[str, list[ObservedContainer]] = defaultdict(list)
    for container in ours:
        by_service[container.service or ""].append(container)

    removals: list[Action] = [
        RemoveContainer(c, f"service {c.service!r} is no longer declared")
        for c in sorted(ours, key=lambda c: c.name)
        if c.service not in desired.services
    ]

    infrastructure: list[Action] = []
    infrastructure += plan_networks(desired, observed, conflicts)
    infrastructure += plan_volumes(desired, observed, conflicts)

    service_actions: list[Action] = []
    by_name = {c.name: c for c in observed.containers}
    recreated: set[str] = set()
    for name in dependency_order(desired.services.values()):
        service = desired.services[name]
        actions = _plan_service(
            service,
            project=project,
            mine=by_service.get(name, []),
            same_name=by_name.get(desired.container_of(name)),
            declared=desired.services.keys(),
            conflicts=conflicts,
            recreated=recreated,
        )
        if any(isinstance(a, RecreateService) for a in actions):
            recreated.add(name)
        service_actions += actions

    declared_networks = {n.name for n in desired.networks.values()}
    network_removals: list[Action] = [
        RemoveNetwork(n, "network is no longer declared")
        for n in sorted(observed.networks, key=lambda n: n.name)
        if n.labels.get(labels.PROJECT) == project and n.name not in declared_networks
    ]

    return Plan(
        actions=tuple(removals + infrastructure + service_actions + network_removals),
        conflicts=tuple(conflicts),
    )


def _plan_service(
    service: ServiceSpec,
    *,
    project: str,
    mine: list[ObservedContainer],
    same_name: ObservedContainer | None,
    declared: Collection[str],
    conflicts: list[str],
    recreated: Collection[str] = (),
) -> list[Action]:
    canonical = container_name_of(project, service)
    if same_name is not None and same_name.project != project:
        owner = f"project {same_name.project!r}" if same_name.project else "no reconciler project"
        conflicts.append(
            f"container {canonical} exists but belongs to {owner}, so it is never touched; "
            f"remove or rename it (docker rm -f {canonical}, or docker rename {canonical} NEW) "
            + (
                f"or choose another container_name for service {service.name!r}"
                if service.container_name
                else "or choose another RECONCILER_PROJECT"
            )
        )
        return []
    if same_name is not None and (
        same_name.is_helper or (same_name.service != service.name and same_name.service in declared)
    ):
        # Ours, but not this service's: a helper (backup, restore, drill) or another
        # service's container renamed by hand. Creating the service would fail on
        # the name, and removing it could interrupt a backup or take the wrong one.
        what = (
            "a helper container of the reconciler (a backup, restore or drill that is running "
            "or was interrupted)"
            if same_name.is_helper
            else f"the container of service {same_name.service!r} (renamed by hand?)"
        )
        conflicts.append(
            f"container {canonical} is {what}, so service {service.name!r} cannot take its "
            f"name; remove it (docker rm -f {canonical}) or rename it "
            f"(docker rename {canonical} NEW)"
        )
        return []

    wanted = config_hash(service)
    current = next((c for c in mine if c.name == canonical), None)
    if current is None:
        # container_name set, changed or dropped: the container under its former
        # name is this service's, replaced as any recreate (health-gated, rolled
        # back to its name on failure), not removed first as a leftover.
        named = [c for c in mine if not _ASIDE.search(c.name)]
        if len(named) == 1 and Change("key", "container_name") in changes_of(
            service, named[0], wanted
        ):
            current = named[0]
    actions: list[Action] = [
        RemoveContainer(c, "leftover of an interrupted change")
        for c in sorted(mine, key=lambda c: c.name)
        if c is not current
    ]
    # Compose's ``restart: true``: a dependency recreated earlier in this plan.
    restarted = tuple(
        Change("dependency", d.service)
        for d in service.depends_on
        if d.restart and d.service in recreated
    )
    if current is None:
        actions.append(CreateService(service, wanted, "no container"))
        return actions
    changes = changes_of(service, current, wanted)
    if not any(c == Change("key", "image") for c in changes):
        changes += _image_moved(service, current)
    if changes or restarted:
        changes += restarted
        actions.append(RecreateService(service, wanted, current, render_changes(changes), changes))
    elif current.state in {"paused", "dead"}:
        actions.append(RecreateService(service, wanted, current, f"container is {current.state}"))
    elif current.state in {"exited", "created"} and not _finished_one_shot(service, current):
        detail = f" (exit code {current.exit_code})" if current.exit_code is not None else ""
        actions.append(StartService(service, current, f"container is {current.state}{detail}"))
    return actions


# The name a recreate gives the previous container while the new one starts
# (deploy/applying.py): a leftover when found, never a service's container.
_ASIDE = re.compile(r"-old-[0-9a-f]{12}$")


def changes_of(
    service: ServiceSpec, current: ObservedContainer | ObservedSwarmService, wanted: str
) -> tuple[Change, ...]:
    """What differs between ``service`` and the spec ``current`` was made from, by name.

    From the parts label on the container, so a fresh process (a restarted
    daemon, ``reconciler plan``) gives the same reasons. A container made by a
    reconciler that stored no parts, or whose parts all match (a changed hash
    version), gets the two hashes instead.
    """
    if current.config_hash == wanted:
        return ()
    stored = decode_parts(current.labels.get(labels.CONFIG_PARTS))
    names = changed_parts(config_parts(service), stored) if stored is not None else []
    if not names:
        old = (current.config_hash or "none")[:12]
        return (Change("hash", f"{old} -> {wanted[:12]}"),)
    return tuple(
        Change("file", n.removeprefix(FILE_PREFIX))
        if n.startswith(FILE_PREFIX)
        else Change("key", n)
        for n in names
    )


def _image_moved(service: ServiceSpec, current: ObservedContainer) -> tuple[Change, ...]:
    """The image reference names another image than the container runs, or none.

    Docker's container list gives the reference the container was made from
    while it still names the container's image, and the image ID once it does
    not (a pull or a build moved the tag, or it was removed): no extra request.
    """
    moved = (
        current.image_id.startswith("sha256:")
        and current.image == current.image_id
        and service.image != current.image_id
    )
    return (Change("image", service.image),) if moved else ()


def _finished_one_shot(service: ServiceSpec, container: ObservedContainer) -> bool:
    """A job that ran to success and is not meant to restart (a migration, a seed)."""
    return service.restart == "no" and container.state == "exited" and container.exit_code == 0


def plan_networks(
    desired: DesiredState, observed: Observed | ObservedSwarm, conflicts: list[str]
) -> list[Action]:
    existing = {n.name: n for n in observed.networks}
    actions: list[Action] = []
    for network in desired.networks.values():
        found = existing.get(network.name)
        if network.external:
            if found is None:
                conflicts.append(
                    f"network {network.name} is declared external but does not exist; "
                    f"create it (docker network create {network.name})"
                )
        elif found is None:
            actions.append(CreateNetwork(network, "does not exist"))
        elif found.labels.get(labels.PROJECT) != desired.project:
            conflicts.append(
                f"network {network.name} exists but was not created by the reconciler for "
                f"project {desired.project!r}; remove it (docker network rm {network.name}) "
                f"or declare networks.{network.key} with external: true"
            )
    return actions


def plan_volumes(
    desired: DesiredState, observed: Observed | ObservedSwarm, conflicts: list[str]
) -> list[Action]:
    existing = {v.name: v for v in observed.volumes}
    actions: list[Action] = []
    for volume in desired.volumes.values():
        found = existing.get(volume.name)
        if volume.external:
            if found is None:
                conflicts.append(
                    f"volume {volume.name} is declared external but does not exist; "
                    f"create it (docker volume create {volume.name})"
                )
        elif found is None:
            actions.append(CreateVolume(volume, "does not exist"))
        elif found.labels.get(labels.PROJECT) != desired.project:
            # It may hold data (e.g. made by docker compose): never adopt it silently.
            conflicts.append(
                f"volume {volume.name} exists but was not created by the reconciler for "
                f"project {desired.project!r}; to use its data declare volumes.{volume.key} "
                f"with external: true and name: {volume.name}, or rename the volume in compose.yaml"
            )
    return actions


def dependency_order(services: Iterable[ServiceSpec]) -> list[str]:
    """Service names with every dependency before its dependents; file order breaks ties.

    The loader rejects cycles; one here is a bug, so it raises.
    """
    specs = list(services)
    names = [s.name for s in specs]
    deps = {s.name: [d.service for d in s.depends_on if d.service in names] for s in specs}
    ordered: list[str] = []
    done: set[str] = set()
    while len(ordered) < len(names):
        ready = next((n for n in names if n not in done and all(d in done for d in deps[n])), None)
        if ready is None:
            raise ValueError(f"depends_on cycle among {sorted(set(names) - done)}")
        ordered.append(ready)
        done.add(ready)
    return ordered
