"""Which kind of engine a desired state is validated and deployed for.

``engine``: one Docker engine, a container per service (the default).
``swarm``: a Swarm manager, the desired state deployed as a stack of services
(docs/compose-subset.md, "Swarm mode"; docs/operations.md, "Growing past one VM").
``RECONCILER_ENGINE`` chooses (``auto``: ask the engine); ``swarm_role_of``
reads the engine's answer. No I/O: the adapter asks (``DockerEngine.swarm_role``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

EngineMode = Literal["engine", "swarm"]


# manager: deploys the stack as Swarm services. worker: part of a Swarm that
# only its managers deploy to (a worker, or a node joining, locked or in
# error): a plain stack here would run beside the Swarm's tasks. none: one engine.
SwarmRole = Literal["manager", "worker", "none"]


def swarm_role_of(info: Mapping[str, Any]) -> SwarmRole:
    """What ``docker info`` says this engine is in a Swarm: a manager (a node that
    can deploy a stack: ``Swarm.LocalNodeState`` active and ``ControlAvailable``),
    another member, or in none (inactive, or no answer about a Swarm)."""
    node = info.get("Swarm")
    if not isinstance(node, Mapping):
        return "none"
    state = node.get("LocalNodeState")
    if state in (None, "", "inactive"):
        return "none"
    if state == "active" and node.get("ControlAvailable") is True:
        return "manager"
    return "worker"


def swarm_mode_of(info: Mapping[str, Any]) -> bool:
    """Whether ``docker info`` says this engine is a Swarm manager."""
    return swarm_role_of(info) == "manager"
