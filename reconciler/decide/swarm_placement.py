"""Whether a volume a backup or restore names is on this node, in swarm mode: pure.

Backups and restores read and write volumes on the engine the reconciler
talks to, a Swarm manager. A volume of the local driver keeps its data on the
node of the task that mounts it, so the data of a service running elsewhere
is elsewhere. Worse, this node may hold a volume of the same name from before
the service moved, which a backup would read as if it were current, and a
restore would fill without the service ever seeing it. So each such volume
must be mounted by no running task on another node; a volume on shared
storage (NFS, CIFS, a plugin) is the same wherever it is mounted.

``task_hosts`` says, by service, the host names of the other nodes its
running tasks are on (adapters/swarm_engine.py asks the Swarm and tells this
node apart by its node id: two VMs cloned from one image may share a host name).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from reconciler.model.desired import DesiredState


def volumes_elsewhere(
    desired: DesiredState,
    volume_keys: Iterable[str],
    *,
    here: str,
    task_hosts: Mapping[str, Collection[str]],
) -> list[str]:
    """Why each of ``volume_keys`` cannot be read or written on this node (``here``):
    empty when all can."""
    problems: list[str] = []
    for key in volume_keys:
        volume = desired.volumes[key]
        if not volume.on_one_node:
            continue
        for service in desired.services_mounting(volume.name):
            away = sorted(task_hosts.get(service.name, ()))
            if away:
                problems.append(
                    f"volume {key}: its data is on node {', '.join(away)}, where service "
                    f"{service.name} runs, and backups and restores reach volumes on this node "
                    f"({here}): pin {service.name} here (deploy: placement: constraints: "
                    f"[node.hostname == {here}]) or keep {key} on shared storage (NFS)"
                )
    return problems


def services_to_ask(desired: DesiredState, volume_keys: Iterable[str]) -> list[str]:
    """The services whose tasks' nodes ``volumes_elsewhere`` needs, in file order."""
    names: dict[str, None] = {}
    for key in volume_keys:
        volume = desired.volumes[key]
        if volume.on_one_node:
            names.update((s.name, None) for s in desired.services_mounting(volume.name))
    return list(names)
