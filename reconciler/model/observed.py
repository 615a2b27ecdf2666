"""What runs, as read from Docker in one list call per kind. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


class _Owned:
    """What our labels say of an object (a container, a Swarm service)."""

    labels: dict[str, str]

    @property
    def project(self) -> str | None:
        from reconciler import labels

        return self.labels.get(labels.PROJECT)

    @property
    def service(self) -> str | None:
        from reconciler import labels

        return self.labels.get(labels.SERVICE)

    @property
    def config_hash(self) -> str | None:
        from reconciler import labels

        return self.labels.get(labels.CONFIG_HASH)

    @property
    def commit(self) -> str | None:
        from reconciler import labels

        return self.labels.get(labels.COMMIT)


@dataclass(frozen=True)
class ObservedContainer(_Owned):
    id: str
    name: str  # without the leading "/"
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    state: str = "running"  # created | running | paused | restarting | exited | dead
    health: str | None = None  # starting | healthy | unhealthy | None (no check)
    exit_code: int | None = None
    image: str = ""
    image_id: str = ""  # sha256:..., what image garbage collection keeps

    @property
    def is_helper(self) -> bool:
        from reconciler import labels

        return labels.HELPER in self.labels


@dataclass(frozen=True)
class ObservedNetwork:
    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ObservedVolume:
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Observed:
    """Everything on the engine that the plan may need to know about.

    ``containers`` holds every container on the engine, ours and others, so a
    name collision with a container we do not own can be detected.
    """

    containers: tuple[ObservedContainer, ...] = ()
    networks: tuple[ObservedNetwork, ...] = ()
    volumes: tuple[ObservedVolume, ...] = ()


@dataclass(frozen=True)
class ObservedSwarmService(_Owned):
    """A Swarm service, as ``GET /services`` gives it."""

    id: str
    name: str
    version: int  # Swarm's object version: an update must name the one it read
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    task_hash: str | None = None  # on the task template (decide/swarm_specs.py)
    replicas: int | None = None  # None: global mode
    # The configs and secrets its spec and its previous spec name: a rollback
    # goes back to the previous spec, so its objects must stay too.
    objects: frozenset[str] = frozenset()
    update_state: str | None = None  # updating | completed | rollback_completed | ...
    update_message: str = ""


@dataclass(frozen=True)
class ObservedSwarmObject:
    """A Swarm config or secret (its data is never read back)."""

    kind: str  # config | secret
    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ObservedSwarm:
    """What a Swarm manager runs: services, configs and secrets, networks, the volumes here."""

    services: tuple[ObservedSwarmService, ...] = ()
    objects: tuple[ObservedSwarmObject, ...] = ()
    networks: tuple[ObservedNetwork, ...] = ()
    volumes: tuple[ObservedVolume, ...] = ()
    # The engine's own containers of the project (a stack deployed before the
    # engine joined a Swarm), not the Swarm's tasks.
    containers: tuple[ObservedContainer, ...] = ()


@dataclass(frozen=True)
class TaskState:
    """One task of a service, as ``GET /tasks`` gives it."""

    id: str
    state: str  # new ... running | complete | failed | shutdown | rejected | orphaned
    desired: str  # running | shutdown | ...
    error: str = ""
    container_id: str = ""
    node_id: str = ""
    task_hash: str | None = None  # of the spec it was made from (decide/swarm_specs.py)


@dataclass(frozen=True)
class ServiceProgress:
    """Where a service stands: its rolling update, if any, and its tasks."""

    version: int
    update_state: str | None
    update_message: str
    update_started: str | None
    replicas: int | None  # None: global mode
    tasks: tuple[TaskState, ...]
