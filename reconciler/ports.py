"""The seams between deciding and acting: what a pass needs of git and Docker.

Adapters in ``reconciler/adapters`` implement these against the real things;
tests of the loop may use in-memory fakes. Every method raises
``reconciler.errors.Unavailable`` when the other side cannot be reached, never
returns "nothing" in that case.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from reconciler.decide.image_gc import ObservedImage, PulledImage
from reconciler.decide.verification import SignaturePolicy, Verification
from reconciler.model.desired import HealthCheck, NetworkSpec, ServiceSpec, VolumeSpec
from reconciler.model.engine_mode import SwarmRole
from reconciler.model.observed import Observed, ObservedSwarm, ServiceProgress

Progress = Callable[[str], None]

# What ``Engine.remove_image`` says of an image that was not there to remove.
ALREADY_GONE = "already gone"


@dataclass(frozen=True)
class Checkout:
    """A commit materialised as a read-only folder that never moves."""

    commit: str
    root: Path  # the repository's files at that commit


class Source(Protocol):
    def remote_head(self) -> str:
        """The commit the branch points at on the remote (cheap: no fetch)."""
        ...

    def checkout(self, commit: str) -> Checkout:
        """Fetch if needed, then give the files of exactly that commit."""
        ...


class SignedSource(Protocol):
    def verify(self, commit: str, policy: SignaturePolicy) -> Verification:
        """Is the commit signed by a key the policy allows (fetching it if needed)?"""
        ...


class Verifier(Protocol):
    def verify(self, commit: str) -> Verification:
        """The verdict on the commit a pass is about to apply."""
        ...


class Engine(Protocol):
    def observe(self, project: str) -> Observed:
        """All containers (ours and others), and the project's networks and
        volumes plus any with colliding names: one list call per kind."""
        ...

    def ensure_image(
        self,
        service: ServiceSpec,
        *,
        progress: Progress | None = None,
        project: str | None = None,
    ) -> PulledImage | None:
        """Make ``service.image`` present: build it (labelled as built for
        ``project``), or pull it when missing. Raises ``ImageUnavailable``
        with what was tried. Returns the image a pull brought (an id that was
        not under that reference before), else None (built, present, or the
        pull changed nothing)."""
        ...

    def list_images(
        self, project: str, *, pulled: Collection[str] = ()
    ) -> tuple[ObservedImage, ...]:
        """The images built for ``project`` (those with its image label), and
        those of the ``pulled`` ids still present; no others. One list call."""
        ...

    def remove_image(self, image_id: str, *, by_tags: Collection[str] = ()) -> str | None:
        """Remove an image without force; None when removed, else why it stayed.

        ``by_tags``: remove it by untagging these (each only while it still
        names ``image_id``); the image goes with its last tag."""
        ...

    def create_network(self, network: NetworkSpec, *, project: str) -> None: ...

    def create_volume(self, volume: VolumeSpec, *, project: str) -> None: ...

    def remove_network(self, network_id: str) -> None: ...

    def run_container(
        self,
        service: ServiceSpec,
        *,
        name: str,
        labels: dict[str, str],
        inherit_from: str | None = None,
    ) -> str:
        """Create the container, attach its networks, start it; return its id.

        ``inherit_from``: the container this one replaces (a recreate); its
        anonymous volumes are mounted at the same paths, as Compose does."""
        ...

    def start_container(self, container_id: str) -> None: ...

    def stop_container(self, container_id: str, *, timeout_s: float = 10.0) -> None: ...

    def rename_container(self, container_id: str, new_name: str) -> None: ...

    def remove_container(self, container_id: str) -> None:
        """Force-remove a container; its anonymous volumes stay (never lose data)."""
        ...

    def wait_ready(
        self, container_id: str, healthcheck: HealthCheck | None, *, timeout_s: float
    ) -> str | None:
        """Wait until the container is healthy (or, without a health check,
        running). Return None when ready, else why not ("unhealthy", "exited
        with code 1", "not healthy after 60s")."""
        ...


@runtime_checkable
class SwarmEngine(Engine, Protocol):
    """An ``Engine`` that can also drive a Swarm (adapters/swarm_engine.py)."""

    def swarm_role(self) -> SwarmRole: ...

    def observe_swarm(self, project: str) -> ObservedSwarm: ...

    def network_ids(self, names: list[str]) -> dict[str, str]: ...

    def object_ids(self) -> dict[str, tuple[str, str]]: ...

    def progress(self, service_id: str) -> ServiceProgress: ...

    def remaining_tasks(self, service_id: str) -> int: ...

    def create_object(
        self, kind: Literal["config", "secret"], name: str, data: bytes, *, labels: dict[str, str]
    ) -> str: ...

    def remove_object(self, kind: Literal["config", "secret"], object_id: str) -> None: ...

    def create_service(self, spec: dict[str, Any]) -> str: ...

    def update_service(self, service_id: str, version: int, spec: dict[str, Any]) -> None: ...

    def remove_service(self, service_id: str) -> None: ...
