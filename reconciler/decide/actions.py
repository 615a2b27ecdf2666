"""The typed actions a plan is made of. Apply dispatches on them with ``match``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, assert_never

from reconciler.model.desired import FileGrant, NetworkSpec, ServiceSpec, VolumeSpec
from reconciler.model.observed import (
    ObservedContainer,
    ObservedNetwork,
    ObservedSwarmObject,
    ObservedSwarmService,
)

ChangeKind = Literal["key", "file", "image", "dependency", "hash"]


@dataclass(frozen=True)
class Change:
    """One reason to recreate a service, by name only (never a value: it may be secret).

    - ``key``: a compose key, or an entry of ``environment`` or ``labels``
      (``image``, ``command``, ``environment.API_TOKEN``);
    - ``file``: a repository file or folder whose contents changed
      (``desired-state/web.env``, a bind-mounted file, a build context);
    - ``image``: the service's image reference (``name``) now names another image
      than the one its container runs: a pull or a build outside this pass moved
      the tag (Docker Compose recreates then too);
    - ``dependency``: a service this one depends on (``restart: true``) is recreated;
    - ``hash``: only the config hash is known to differ (the container was made
      by a reconciler that stored no parts); ``name`` is ``old -> new``.
    """

    kind: ChangeKind
    name: str


def render_changes(changes: tuple[Change, ...]) -> str:
    """A recreate's reason in words: ``environment.API_TOKEN, desired-state/web.env changed``."""
    said: list[str] = []
    named = [c.name for c in changes if c.kind in ("key", "file")]
    if named:
        said.append(f"{', '.join(named)} changed")
    said += [f"image {c.name} moved to another image" for c in changes if c.kind == "image"]
    dependencies = [c.name for c in changes if c.kind == "dependency"]
    if dependencies:
        noun = "dependency" if len(dependencies) == 1 else "dependencies"
        said.append(f"{noun} {', '.join(dependencies)} recreated")
    said += [f"configuration changed ({c.name})" for c in changes if c.kind == "hash"]
    return "; ".join(said) or "configuration changed"


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
    # Why, as data (``reason`` is their rendering); empty for a paused or dead container.
    changes: tuple[Change, ...] = ()


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


# -- swarm mode (decide/swarm_planning.py) --------------------------------


@dataclass(frozen=True)
class CreateSwarmObject:
    """A config or secret whose content no Swarm object holds yet."""

    kind: Literal["config", "secret"]
    name: str  # content-addressed (decide/swarm_specs.py object_name)
    grant: FileGrant
    reason: str


@dataclass(frozen=True)
class RemoveSwarmObject:
    """A config or secret of ours that no service's spec or previous spec names."""

    object: ObservedSwarmObject
    reason: str


@dataclass(frozen=True)
class CreateSwarmService:
    service: ServiceSpec
    config_hash: str
    reason: str


@dataclass(frozen=True)
class UpdateSwarmService:
    """A rolling update (``replace_tasks``) or a change Swarm makes in place (replicas)."""

    service: ServiceSpec
    config_hash: str
    old: ObservedSwarmService
    reason: str
    changes: tuple[Change, ...] = ()
    replace_tasks: bool = True


@dataclass(frozen=True)
class RemoveSwarmService:
    observed: ObservedSwarmService
    reason: str


SwarmAction = (
    CreateSwarmObject
    | RemoveSwarmObject
    | CreateSwarmService
    | UpdateSwarmService
    | RemoveSwarmService
)
EngineAction = (
    CreateNetwork
    | CreateVolume
    | CreateService
    | RecreateService
    | StartService
    | RemoveContainer
    | RemoveNetwork
)
Action = EngineAction | SwarmAction


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
        case CreateSwarmObject(kind=k, name=name, reason=r):
            return f"create {k} {name}: {r}"
        case RemoveSwarmObject(object=o, reason=r):
            return f"remove {o.kind} {o.name}: {r}"
        case CreateSwarmService(service=s, reason=r):
            return f"create service {s.name}: {r}"
        case UpdateSwarmService(service=s, reason=r, replace_tasks=True):
            return f"update service {s.name}: {r}"
        case UpdateSwarmService(service=s, reason=r):
            return f"scale service {s.name}: {r}"
        case RemoveSwarmService(observed=o, reason=r):
            return f"remove service {o.service or o.name}: {r}"
        case _:
            assert_never(action)


def summarize(plan: Plan, *, limit: int | None = None) -> str:
    """The plan in one line, for a commit status: ``2 to recreate: web (web.env), db (image)``.

    Within ``limit`` characters: the reasons go first, then the names, then
    the counts are all that is left (cut at the limit as a last resort), so
    what is said is always whole.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for action in plan.actions:
        verb, subject, detail = _summary_item(action)
        groups.setdefault(verb, []).append((subject, detail))
    if not groups:
        return "nothing to change"
    order = sorted(groups, key=_VERBS.index)

    def line(detailed: bool, named: bool) -> str:
        said = []
        for verb in order:
            items = groups[verb]
            head = f"{len(items)} to {verb}"
            if named:
                names = (f"{s} ({d})" if detailed and d else s for s, d in items)
                head += ": " + ", ".join(names)
            said.append(head)
        return "; ".join(said)

    for detailed, named in ((True, True), (False, True), (False, False)):
        text = line(detailed, named)
        if limit is None or len(text) <= limit:
            return text
    assert limit is not None
    return text[: max(limit - 3, 0)] + "..."


_VERBS = ("remove", "create", "recreate", "update", "scale", "start")


def _summary_item(action: Action) -> tuple[str, str, str]:
    """(verb, subject, short reason) of one action for ``summarize``."""
    match action:
        case CreateNetwork(network=n):
            return "create", f"network {n.name}", ""
        case CreateVolume(volume=v):
            return "create", f"volume {v.name}", ""
        case CreateService(service=s):
            return "create", s.name, ""
        case RecreateService(service=s, changes=changes, reason=r):
            return "recreate", s.name, _short_changes(changes) if changes else r
        case StartService(service=s):
            return "start", s.name, ""
        case RemoveContainer(container=c):
            return "remove", c.name, ""
        case RemoveNetwork(network=n):
            return "remove", f"network {n.name}", ""
        case CreateSwarmObject(kind=k, grant=g):
            return "create", f"{k} {g.name}", ""
        case RemoveSwarmObject(object=o):
            return "remove", f"{o.kind} {o.name}", ""
        case CreateSwarmService(service=s):
            return "create", s.name, ""
        case UpdateSwarmService(service=s, changes=changes, reason=r, replace_tasks=replace):
            return (
                ("update" if replace else "scale"),
                s.name,
                (_short_changes(changes) if changes else r),
            )
        case RemoveSwarmService(observed=o):
            return "remove", o.service or o.name, ""
        case _:
            assert_never(action)


def _short_changes(changes: tuple[Change, ...]) -> str:
    """What changed, tersely: files by their name, a dependency as ``after db``."""
    said = []
    for change in changes:
        match change.kind:
            case "file":
                said.append(change.name.rsplit("/", 1)[-1])
            case "image":
                said.append("image moved")
            case "dependency":
                said.append(f"after {change.name}")
            case "hash":
                said.append("configuration")
            case "key":
                said.append(change.name)
            case _:
                assert_never(change.kind)
    return ", ".join(said)
