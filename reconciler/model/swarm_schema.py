"""The Compose keys of swarm mode, as users write them: ``deploy`` and what Swarm refuses.

In swarm mode (``load_desired_state(..., engine_mode="swarm")``) the keys of
``deploy`` that one engine refuses (``compose_runtime.Deploy``) are validated
here, in Compose's syntaxes (durations such as ``10s``, ``parallelism: 2``).
``SWARM_REFUSED`` says, for each service key Swarm ignores or forbids, why and
what to write instead; ``model/swarm_checks.py`` reports them at their line.
No I/O here. docs/compose-subset.md ("Swarm mode") documents this for users.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from reconciler.model import compose_schema as schema
from reconciler.model.compose_grants import STORE_KEYS
from reconciler.model.compose_values import ComposeModel, Duration, Labels, NonEmptyText
from reconciler.model.yaml_lines import KeyPath

# ``node.hostname == vm1``, ``node.labels.zone != edge``: Docker's constraint grammar.
_CONSTRAINT = re.compile(r"\s*([A-Za-z][\w.-]*)\s*(==|!=)\s*(\S(?:.*\S)?)\s*")
# Constraints that name one node: a service pinned by one stays on that node.
_ONE_NODE_KEYS = frozenset({"node.hostname", "node.id"})


def _constraint(value: Any) -> str:
    if not isinstance(value, str) or not _CONSTRAINT.fullmatch(value):
        raise ValueError(
            f"invalid constraint {value!r}: write ATTRIBUTE == VALUE or ATTRIBUTE != VALUE, "
            "e.g. node.hostname == vm1 or node.labels.zone == eu"
        )
    return value.strip()


def pinned_node(constraints: tuple[str, ...] | list[str]) -> str | None:
    """The one node ``constraints`` name (``node.hostname == vm1`` -> ``vm1``), or None."""
    named: set[tuple[str, str]] = set()
    for constraint in constraints:
        match = _CONSTRAINT.fullmatch(constraint)
        if match and match.group(1) in _ONE_NODE_KEYS and match.group(2) == "==":
            named.add((match.group(1), match.group(3)))
    if len(named) != 1:
        return None  # none, or two that no single node can meet
    return next(iter(named))[1]


class SpreadPreference(ComposeModel):
    """``- spread: node.labels.zone``: the only placement preference Swarm has."""

    spread: NonEmptyText

    @model_validator(mode="before")
    @classmethod
    def _spread_only(cls, data: Any) -> Any:
        if not isinstance(data, dict) or set(data) != {"spread"}:
            raise ValueError(
                "Swarm's only placement preference is spread: write - spread: LABEL, "
                "e.g. - spread: node.labels.zone"
            )
        return data


class Placement(ComposeModel):
    constraints: list[Annotated[str, BeforeValidator(_constraint)]] = []
    preferences: list[SpreadPreference] = []
    # 0: no limit, as Docker reads it.
    max_replicas_per_node: int | None = Field(default=None, ge=0)


FAILED_UPDATE = (
    "a failed update must be rolled back and reported as a failed deploy: write "
    "failure_action: rollback, or leave it out"
)


def _update_failure_action(value: Any) -> Any:
    if value != "rollback":
        raise ValueError(f"{value!r}: {FAILED_UPDATE}")
    return value


def _rollback_failure_action(value: Any) -> Any:
    if value not in {"pause", "continue"}:
        raise ValueError(
            f"{value!r}: a rollback that fails either pauses (pause, the default) or goes on "
            "(continue); there is nothing to roll a rollback back to"
        )
    return value


class _UpdateOptions(ComposeModel):
    parallelism: int | None = Field(default=None, ge=0)
    delay: Duration | None = None
    monitor: Duration | None = None
    max_failure_ratio: float | None = Field(default=None, ge=0, le=1)
    order: Literal["start-first", "stop-first"] | None = None


class UpdateConfig(_UpdateOptions):
    failure_action: Annotated[str, BeforeValidator(_update_failure_action)] | None = None


class RollbackConfig(_UpdateOptions):
    failure_action: Annotated[str, BeforeValidator(_rollback_failure_action)] | None = None


class RestartPolicyConfig(ComposeModel):
    condition: Literal["none", "on-failure", "any"] = "any"
    delay: Duration | None = None
    # 0: without limit, as Docker reads it.
    max_attempts: int | None = Field(default=None, ge=0)
    window: Duration | None = None


def _deploy_mode(value: Any) -> Any:
    if value in {"replicated-job", "global-job"}:
        raise ValueError(
            f"mode {value}: a job runs to completion once, and the reconciler deploys "
            "services that keep running; write replicated or global"
        )
    return value


class SwarmDeployConfig(ComposeModel):
    """Swarm's keys of a service's ``deploy`` (``resources`` is ``compose_runtime.Deploy``'s)."""

    mode: Annotated[Literal["replicated", "global"], BeforeValidator(_deploy_mode)] = "replicated"
    replicas: int | None = Field(default=None, ge=0)
    placement: Placement | None = None
    update_config: UpdateConfig | None = None
    rollback_config: RollbackConfig | None = None
    restart_policy: RestartPolicyConfig | None = None
    endpoint_mode: Literal["vip", "dnsrr"] = "vip"
    labels: Labels = {}

    @model_validator(mode="after")
    def _replicated_only(self) -> SwarmDeployConfig:
        if self.mode == "global" and self.replicas is not None:
            raise ValueError(
                "mode global runs one task on every node (that the placement allows): "
                "drop replicas, or write mode: replicated"
            )
        return self


# Why each service key Swarm ignores or forbids is refused in swarm mode, and
# what to write instead. ``docker stack deploy`` drops most of them with a
# warning; here nothing is dropped silently.
SWARM_REFUSED = {
    "build": "Swarm runs images from a registry, on any node: build the image in CI and push "
    "it to a registry; name it by image: with the tag or digest the CI gave",
    "container_name": "Swarm names each task itself (<project>_<service>.<slot>.<id>), and a "
    "service may have several: drop it; other services reach it by its service name",
    "depends_on": "Swarm starts all services at once, in no order: drop it; make the service "
    "retry its connection, healthchecks gate updates",
    "restart": "Swarm restarts tasks by their restart policy: use "
    "deploy.restart_policy.condition (any, on-failure or none) instead",
    "network_mode": "a Swarm service joins overlay networks: drop it and list the networks "
    "under networks:",
    "links": "Swarm has no links: drop them; services on a shared network reach each other by "
    "service name",
    "pull_policy": "each node pulls the image Swarm resolved when the service was deployed: "
    "drop pull_policy (or write missing)",
    "tmpfs": "docker stack deploy ignores tmpfs: and the reconciler makes no tmpfs mounts for "
    "Swarm: drop it (a task's own file system holds scratch files) or mount a named volume",
    "shm_size": "Swarm's service spec has no shared memory size: drop it (a task gets Docker's "
    "default, 64 MB)",
    "security_opt": "docker stack deploy ignores security_opt and Swarm's service spec has no "
    "such list: drop it",
    "expose": "Swarm has no exposed ports: on an overlay network the other services reach "
    "every port of a task; drop it (publish with ports: to reach it from outside)",
}
ANONYMOUS_VOLUME = (
    "an anonymous volume: in swarm mode a task's anonymous volume stays behind on its node at "
    "each update and the new task starts with an empty one; name the volume (declare it "
    "under the top-level volumes:)"
)
REPO_BIND = (
    "a bind of a repository path: the checkout exists on the manager only, so a task on "
    "another node would find nothing there; put a file in configs: (file: ./PATH) and grant "
    "it to the service, or build a folder into the image"
)
HOST_BIND = (
    "a bind of a host path: it names a folder of whichever node runs the task; for files of "
    "the repository use configs:, for storage the nodes share a named volume with driver and "
    "driver_opts (NFS, CIFS) under the top-level volumes:"
)
HOST_IP = (
    "Swarm publishes a port on every address of a node, so host_ip cannot be kept: drop the "
    "address; to keep a port off the network, publish nothing and reach the service over an "
    "overlay network"
)
BRIDGE_NETWORK = (
    "a bridge network joins containers of one node only: in swarm mode leave driver out "
    "(overlay, the default) or write driver: overlay"
)
HOST_PORT_START_FIRST = (
    "start-first runs the new task beside the old one, and a port published in host mode "
    "is held by one task per node: write order: stop-first, or publish in mode ingress"
)
SWARM_STORE_REASON = (
    "unsupported key: in swarm mode the reconciler makes the Swarm {kind} itself, named by a "
    "hash of its content: declare where the content comes from (file: a path in the "
    "repository, environment: a variable{content})"
)


def explain_extra(loc: KeyPath, known: list[str]) -> str | None:
    """``compose_schema.explain_extra`` with swarm mode's reasons where they differ."""
    key = str(loc[-1]) if loc else ""
    parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
    if parent[:1] == ("services",) and len(parent) == 2 and key in SWARM_REFUSED:
        return f"refused in swarm mode: {SWARM_REFUSED[key]}"
    grants = parent[:1] in {("secrets",), ("configs",)} and len(parent) == 2
    if grants and key in STORE_KEYS:
        content = ", content: inline text" if parent[0] == "configs" else ""
        return SWARM_STORE_REASON.format(kind=parent[0][:-1], content=content)
    return schema.explain_extra(loc, known)
