"""What runs, as read from Docker in one list call per kind. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ObservedContainer:
    id: str
    name: str  # without the leading "/"
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    state: str = "running"  # created | running | paused | restarting | exited | dead
    health: str | None = None  # starting | healthy | unhealthy | None (no check)
    exit_code: int | None = None
    image: str = ""
    image_id: str = ""  # sha256:..., what image garbage collection keeps

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
