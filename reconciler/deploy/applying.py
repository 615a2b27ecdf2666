"""Apply: carry out a plan's actions on an ``Engine``, in order, and say what was done.

The apply step of a pass (after observe and plan). Images come first: if any
image needed by the plan cannot be had, nothing that runs is touched. Then each
action is dispatched in the plan's order. A recreate keeps the old container
aside until the new one is ready and puts it back if the new one is not, so a
broken commit leaves the previous version running. Every failure becomes an
``ApplyError`` carrying what had already been done; ``on_event`` sees every step.
``on_pulled`` hears of each image a pull brought, the moment it is there (so
image GC owns it even when the apply then fails).

Events (name: fields), for the daemon's structured log:
``apply.start`` (commit, actions); ``image.start`` / ``image.done`` /
``image.failed`` (service, image[, error]); ``image.pulled`` (service, image,
image_id) when a pull brought a new image; ``image.progress`` (service, image,
line); ``action.start`` / ``action.done`` / ``action.failed`` (action, kind,
index[, error]); ``action.warning`` (error); ``service.wait`` /
``service.ready`` / ``service.not_ready`` (service, container, until,
timeout_s[, reason]); ``rollback.start`` / ``rollback.done`` /
``rollback.failed`` (service, ...); ``apply.done`` (done, failures).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, assert_never

from reconciler import labels as lbl
from reconciler.decide.actions import (
    Action,
    CreateNetwork,
    CreateService,
    CreateSwarmObject,
    CreateSwarmService,
    CreateVolume,
    Plan,
    RecreateService,
    RemoveContainer,
    RemoveNetwork,
    RemoveSwarmObject,
    RemoveSwarmService,
    StartService,
    UpdateSwarmService,
    describe,
)
from reconciler.decide.hashing import config_parts, encode_parts
from reconciler.decide.image_gc import PulledImage
from reconciler.errors import ApplyError, Conflict, ImageUnavailable, Unavailable
from reconciler.model.desired import HealthCheck, ServiceSpec, container_name_of
from reconciler.model.observed import ObservedContainer
from reconciler.ports import Engine

OnEvent = Callable[[str, dict[str, object]], None]
OnPulled = Callable[[str, PulledImage], None]  # service name, what its pull brought
Readiness = Literal["ready", "healthy", "completed"]

# Without a health check a new container counts as up once it keeps running
# for a moment; this bounds how long we wait to see that.
DEFAULT_READY_TIMEOUT_S = 30.0
# One-shot services others wait for (migrations, seeding) may take a while.
COMPLETION_TIMEOUT_S = 300.0
COMPLETION_POLL_S = 0.5


@dataclass(frozen=True)
class ChangeSet:
    """What an apply did, as human lines, and what failed without stopping it.

    ``failures`` holds clean-up steps that failed after the desired state was
    reached (a network still in use, an old container that would not go); the
    next pass plans them again.
    """

    commit: str
    done: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.done)


class StepError(Exception):
    """An action failed; ``message`` is the whole story for the user."""

    def __init__(self, message: str, *, changed: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # True when the action did change something before failing (a created
        # service left in place), so it belongs in ``done``.
        self.changed = changed


def apply(
    plan: Plan,
    engine: Engine,
    *,
    project: str,
    commit: str,
    on_event: OnEvent | None = None,
    on_pulled: OnPulled | None = None,
) -> ChangeSet:
    """Carry out ``plan`` on ``engine``; raise ``ApplyError`` at the first failure."""
    if plan.conflicts:
        # The planner's contract is that a conflicted plan is never applied.
        raise Conflict("\n".join(plan.conflicts))
    return _Applier(
        plan,
        engine,
        project=project,
        commit=commit,
        emit=on_event or _ignore,
        pulled=on_pulled or _ignore,
    ).run()


def _ignore(_name: str, _fields: object) -> None:
    pass


def carry_out(
    plan: Plan,
    dispatch: Callable[[Action], None],
    *,
    commit: str,
    emit: OnEvent,
    failures: list[str],
) -> ChangeSet:
    """Dispatch each action of ``plan`` in order, with its events; the first failure
    is an ``ApplyError`` carrying what was done. ``failures`` holds the clean-up
    steps that failed without stopping the apply (``dispatch`` adds them)."""
    done: list[str] = []
    for index, action in enumerate(plan.actions):
        line = describe(action)
        fields: dict[str, object] = {"action": line, "kind": type(action).__name__, "index": index}
        emit("action.start", fields)
        try:
            dispatch(action)
        except StepError as exc:
            if exc.changed:
                done.append(line)
            emit("action.failed", {**fields, "error": exc.message})
            raise ApplyError(exc.message, done=list(done)) from exc.__cause__
        except Exception as exc:
            message = f"{_subject(action)}: {exc}"
            emit("action.failed", {**fields, "error": message})
            raise ApplyError(message, done=list(done)) from exc
        done.append(line)
        emit("action.done", fields)
    emit("apply.done", {"done": len(done), "failures": len(failures)})
    return ChangeSet(commit=commit, done=tuple(done), failures=tuple(failures))


class _Applier:
    def __init__(
        self,
        plan: Plan,
        engine: Engine,
        *,
        project: str,
        commit: str,
        emit: OnEvent,
        pulled: OnPulled,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.project = project
        self.commit = commit
        self.emit = emit
        self.pulled = pulled
        self.failures: list[str] = []

    def run(self) -> ChangeSet:
        self.emit("apply.start", {"commit": self.commit, "actions": len(self.plan.actions)})
        self.ensure_images()
        return carry_out(
            self.plan, self.dispatch, commit=self.commit, emit=self.emit, failures=self.failures
        )

    # -- images first --------------------------------------------------

    def ensure_images(self) -> None:
        """Every image the plan needs, before anything is changed."""
        wanted: dict[str, ServiceSpec] = {}
        for action in self.plan.actions:
            if isinstance(action, CreateService | RecreateService):
                wanted.setdefault(action.service.image, action.service)
        problems: list[str] = []
        first_problem: ImageUnavailable | None = None
        for image, service in wanted.items():
            fields: dict[str, object] = {"service": service.name, "image": image}
            self.emit("image.start", fields)

            def progress(line: str, fields: dict[str, object] = fields) -> None:
                self.emit("image.progress", {**fields, "line": line})

            try:
                pulled = self.engine.ensure_image(service, progress=progress, project=self.project)
            except ImageUnavailable as exc:
                # Keep going: the user should learn of every missing image at once.
                self.emit("image.failed", {**fields, "error": str(exc)})
                problems.append(str(exc))
                first_problem = first_problem or exc
                continue
            except Exception as exc:
                self.emit("image.failed", {**fields, "error": str(exc)})
                raise ApplyError(f"service {service.name}: image {image}: {exc}") from exc
            if pulled is not None:
                self.emit("image.pulled", {**fields, "image_id": pulled.image_id})
                self.pulled(service.name, pulled)
            self.emit("image.done", fields)
        if problems:
            # The cause tells the pass the reason is ImageUnavailable.
            raise ApplyError("; ".join(problems), done=[]) from first_problem

    # -- dispatch ------------------------------------------------------

    def dispatch(self, action: Action) -> None:
        match action:
            case CreateNetwork(network=network):
                self.engine.create_network(network, project=self.project)
            case CreateVolume(volume=volume):
                self.engine.create_volume(volume, project=self.project)
            case CreateService():
                self.create(action)
            case RecreateService():
                self.recreate(action)
            case StartService():
                self.start(action)
            case RemoveContainer(container=container):
                self.engine.stop_container(container.id)
                self.engine.remove_container(container.id)
            case RemoveNetwork(network=network):
                try:
                    self.engine.remove_network(network.id)
                except Unavailable:
                    raise
                except Exception as exc:
                    # Pruning is clean-up: what runs is already as desired.
                    self.warn(f"network {network.name}: not removed: {exc}")
            case (
                CreateSwarmObject()
                | RemoveSwarmObject()
                | CreateSwarmService()
                | UpdateSwarmService()
                | RemoveSwarmService()
            ):
                # The planner of the mode makes the plan its applier carries out.
                raise TypeError(f"a swarm-mode action on a plain engine: {describe(action)}")
            case _:
                assert_never(action)

    def create(self, action: CreateService) -> None:
        service = action.service
        container_id = self.engine.run_container(
            service, name=self.name(service), labels=self.labels(service, action.config_hash)
        )
        readiness = self.readiness(service)
        if readiness is None:
            return
        reason = self.wait(service, container_id, readiness)
        if reason is not None:
            raise StepError(
                f"service {service.name}: created but not ready ({reason}); "
                "left in place as the desired state",
                changed=True,
            )

    def start(self, action: StartService) -> None:
        service = action.service
        self.engine.start_container(action.container.id)
        readiness = self.readiness(service)
        if readiness is None:
            return
        reason = self.wait(service, action.container.id, readiness)
        if reason is not None:
            raise StepError(
                f"service {service.name}: started but not ready ({reason})", changed=True
            )

    def recreate(self, action: RecreateService) -> None:
        service, old = action.service, action.old
        name = self.name(service)
        aside = f"{name}-old-{old.id[:12]}"
        renamed = False
        try:
            self.engine.stop_container(old.id, timeout_s=service.stop_grace_period_s)
            self.engine.rename_container(old.id, aside)
            renamed = True
            # The old container's anonymous volumes go on in the new one (as in
            # Compose); a rollback leaves them with the old container.
            new_id = self.engine.run_container(
                service,
                name=name,
                labels=self.labels(service, action.config_hash),
                inherit_from=old.id,
            )
        except Exception as exc:
            outcome = self.roll_back(service, old, aside=aside, renamed=renamed, new_id=None)
            raise StepError(
                f"service {service.name}: new version could not be started ({exc}); {outcome}"
            ) from exc
        try:
            reason = self.wait(service, new_id, self.readiness(service) or "ready")
        except Exception as exc:
            outcome = self.roll_back(service, old, aside=aside, renamed=True, new_id=new_id)
            raise StepError(
                f"service {service.name}: new version could not be checked ({exc}); {outcome}"
            ) from exc
        if reason is not None:
            outcome = self.roll_back(service, old, aside=aside, renamed=True, new_id=new_id)
            raise StepError(
                f"service {service.name}: new version not healthy ({reason}); {outcome}"
            )
        try:
            self.engine.remove_container(old.id)
        except Unavailable:
            raise
        except Exception as exc:
            # The new version runs; the old one, renamed aside, is pruned next pass.
            self.warn(f"service {service.name}: previous container {aside} not removed: {exc}")

    def roll_back(
        self,
        service: ServiceSpec,
        old: ObservedContainer,
        *,
        aside: str,
        renamed: bool,
        new_id: str | None,
    ) -> str:
        """Put the previous container back as it was; say how that went."""
        commit = (old.commit or "unknown")[:12]
        self.emit("rollback.start", {"service": service.name, "container": old.name})
        try:
            if new_id is not None:
                self.engine.remove_container(new_id)
            if renamed:
                self.engine.rename_container(old.id, old.name)
            # Restore its previous state: one that had stopped stays stopped.
            if old.state not in ("created", "exited", "dead"):
                self.engine.start_container(old.id)
        except Exception as exc:
            self.emit("rollback.failed", {"service": service.name, "error": str(exc)})
            current = aside if renamed else old.name
            return (
                f"rollback failed ({exc}): the previous container (commit {commit}) is "
                f"{current}; bring it back with `docker rename {current} {old.name}` "
                f"and `docker start {old.name}` after removing any new {old.name}"
            )
        self.emit("rollback.done", {"service": service.name, "commit": commit})
        return f"rolled back to the previous container (commit {commit})"

    # -- helpers -------------------------------------------------------

    def name(self, service: ServiceSpec) -> str:
        return container_name_of(self.project, service)

    def labels(self, service: ServiceSpec, config_hash: str) -> dict[str, str]:
        # Ours last: a service label can never forge ownership.
        return {
            **service.labels,
            lbl.PROJECT: self.project,
            lbl.SERVICE: service.name,
            lbl.COMMIT: self.commit,
            lbl.CONFIG_HASH: config_hash,
            lbl.CONFIG_PARTS: encode_parts(config_parts(service)),
        }

    def readiness(self, service: ServiceSpec) -> Readiness | None:
        """What to wait for after starting ``service``, if anything."""
        conditions = {
            dependency.condition
            for action in self.plan.actions
            if isinstance(action, CreateService | RecreateService | StartService)
            for dependency in action.service.depends_on
            if dependency.service == service.name
        }
        if "service_completed_successfully" in conditions:
            return "completed"
        if _checked(service.healthcheck) is not None or "service_healthy" in conditions:
            return "healthy"
        return None

    def wait(self, service: ServiceSpec, container_id: str, readiness: Readiness) -> str | None:
        check = _checked(service.healthcheck)
        if readiness == "completed":
            timeout = COMPLETION_TIMEOUT_S
        else:
            timeout = check.max_wait_s() if check is not None else DEFAULT_READY_TIMEOUT_S
        fields: dict[str, object] = {
            "service": service.name,
            "container": container_id[:12],
            "until": readiness,
            "timeout_s": timeout,
        }
        self.emit("service.wait", fields)
        if readiness == "completed":
            reason = self.wait_completed(container_id, timeout_s=timeout)
        else:
            reason = self.engine.wait_ready(container_id, check, timeout_s=timeout)
        if reason is None:
            self.emit("service.ready", fields)
        else:
            self.emit("service.not_ready", {**fields, "reason": reason})
        return reason

    def wait_completed(self, container_id: str, *, timeout_s: float) -> str | None:
        """Wait for a one-shot container to exit; None when it exited with 0."""
        # The Engine protocol has no "wait for exit"; observing is one list call
        # per kind, cheap at this pace, and keeps the protocol small.
        deadline = time.monotonic() + timeout_s
        while True:
            found = next(
                (c for c in self.engine.observe(self.project).containers if c.id == container_id),
                None,
            )
            if found is None:
                return "the container disappeared"
            if found.state in ("exited", "dead"):
                return None if found.exit_code == 0 else f"exited with code {found.exit_code}"
            if time.monotonic() >= deadline:
                return f"still running after {timeout_s:.0f}s"
            time.sleep(COMPLETION_POLL_S)

    def warn(self, message: str) -> None:
        self.failures.append(message)
        self.emit("action.warning", {"error": message})


def _checked(check: HealthCheck | None) -> HealthCheck | None:
    """The service's own health check, unless absent or disabled."""
    return check if check is not None and not check.disabled else None


def _subject(action: Action) -> str:
    match action:
        case CreateNetwork(network=network):
            return f"network {network.name}"
        case CreateVolume(volume=volume):
            return f"volume {volume.name}"
        case CreateService(service=service) | RecreateService(service=service):
            return f"service {service.name}"
        case StartService(service=service):
            return f"service {service.name}"
        case RemoveContainer(container=container):
            return f"container {container.name}"
        case RemoveNetwork(network=network):
            return f"network {network.name}"
        case _:
            # Swarm mode's: what the plan says it does, without its reason.
            return describe(action).split(":", 1)[0]
