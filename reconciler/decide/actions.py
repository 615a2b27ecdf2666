"""The typed actions a plan is made of. Apply dispatches on them with ``match``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from reconciler.model.desired import NetworkSpec, ServiceSpec, VolumeSpec
from reconciler.model.observed import ObservedContainer, ObservedNetwork


@dataclass(frozen=True)
class CreateNetwork:
    network: NetworkSpec
    reason: str


@dataclass(frozen=True)
class CreateVolume:
    volume: VolumeSpec
    reason: str


@dataclass(frozen=True)
class CreateService:
    service: ServiceSpec
    config_hash: str
    reason: str


@dataclass(frozen=True)
class RecreateService:
    service: ServiceSpec
    config_hash: str
    old: ObservedContainer
    reason: str


@dataclass(frozen=True)
class StartService:
    service: ServiceSpec
    container: ObservedContainer
    reason: str


@dataclass(frozen=True)
class RemoveContainer:
    """A container of ours that is no longer wanted: a service removed from
    compose.yaml, or a leftover of an interrupted apply."""

    container: ObservedContainer
    reason: str


@dataclass(frozen=True)
class RemoveNetwork:
    network: ObservedNetwork
    reason: str


Action = (
    CreateNetwork
    | CreateVolume
    | CreateService
    | RecreateService
    | StartService
    | RemoveContainer
    | RemoveNetwork
)


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    # Things we do not own that block the plan; any conflict stops the pass
    # before anything is changed. Each says how to resolve it.
    conflicts: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions and not self.conflicts


def describe(action: Action) -> str:
    """One line for ``reconciler plan`` and the logs: what and why."""
    match action:
        case CreateNetwork(network=n, reason=r):
            return f"create network {n.name}: {r}"
        case CreateVolume(volume=v, reason=r):
            return f"create volume {v.name}: {r}"
        case CreateService(service=s, reason=r):
            return f"create service {s.name}: {r}"
        case RecreateService(service=s, reason=r):
            return f"recreate service {s.name}: {r}"
        case StartService(service=s, reason=r):
            return f"start service {s.name}: {r}"
        case RemoveContainer(container=c, reason=r):
            return f"remove container {c.name}: {r}"
        case RemoveNetwork(network=n, reason=r):
            return f"remove network {n.name}: {r}"
        case _:
            assert_never(action)
