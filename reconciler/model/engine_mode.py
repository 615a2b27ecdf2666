"""Which kind of engine a desired state is validated and deployed for.

``engine``: one Docker engine, a container per service (the default).
``swarm``: a Swarm manager, the desired state deployed as a stack of services
(docs/compose-subset.md, "Swarm mode"; docs/operations.md, "Growing past one VM").
``RECONCILER_ENGINE`` chooses (``auto``: ask the engine); ``swarm_mode_of``
reads the engine's answer. No I/O: the adapter asks (``DockerEngine.is_swarm_manager``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

EngineMode = Literal["engine", "swarm"]


def swarm_mode_of(info: Mapping[str, Any]) -> bool:
    """Whether ``docker info`` says this engine is a Swarm manager (a node that
    can deploy a stack): ``Swarm.LocalNodeState`` active and ``ControlAvailable``.
    A worker, or a node that left or is joining, is not."""
    node = info.get("Swarm")
    if not isinstance(node, Mapping):
        return False
    return node.get("LocalNodeState") == "active" and node.get("ControlAvailable") is True
