"""Apply in swarm mode: carry out a plan of decide/swarm_planning.py on a Swarm manager.

Swarm does the rolling update itself (start-first where no host port is
published, ``failure_action: rollback``); this module sends each change,
then waits for Swarm's verdict and reports it as it is. A rollback is a
failed deploy (``ApplyError``), never a success: the previous version runs
again, and the message says why the new one was refused.

Images come from a registry: each node pulls what its tasks need, so no
image step precedes the actions (a missing image fails the new tasks, and the
update is rolled back).

Events, as in deploy/applying.py: ``apply.start``, ``action.start`` /
``action.done`` / ``action.failed``, ``service.wait`` / ``service.ready`` /
``service.not_ready``, ``rollback.done`` (Swarm rolled an update back),
``action.warning``, ``apply.done``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import assert_never

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
from reconciler.decide.swarm_specs import (
    deploy_of,
    monitor_s,
    object_labels,
    object_name,
    service_spec,
    task_hash,
)
from reconciler.deploy.applying import ChangeSet, OnEvent, StepError, carry_out
from reconciler.errors import Conflict, Unavailable
from reconciler.model.desired import ServiceSpec, VolumeSpec
from reconciler.model.observed import ServiceProgress
from reconciler.ports import SwarmEngine

POLL_S = 0.5
# Beyond the health checks' own time: for Swarm to schedule, pull and start.
SCHEDULING_MARGIN_S = 60.0
# New tasks that failed before the service converged: enough to call it failing.
FAILED_TASKS_LIMIT = 3
# Swarm's update states that end an update (docs: UpdateStatus.State).
_ROLLED_BACK = {"rollback_completed", "rollback_paused"}
_FAILED = {"paused"} | _ROLLED_BACK


def apply_swarm(
    plan: Plan,
    engine: SwarmEngine,
    *,
    project: str,
    commit: str,
    on_event: OnEvent | None = None,
    volumes: Mapping[str, VolumeSpec] = MappingProxyType({}),
) -> ChangeSet:
    """Carry out ``plan`` on the Swarm; raise ``ApplyError`` at the first failure.

    ``volumes``: the stack's volumes by Docker name, which a node makes when
    its first task mounts one."""
    if plan.conflicts:
        raise Conflict("\n".join(plan.conflicts))
    return _SwarmApplier(
        plan, engine, project=project, commit=commit, emit=on_event, volumes=volumes
    ).run()


class _SwarmApplier:
    def __init__(
        self,
        plan: Plan,
        engine: SwarmEngine,
        *,
        project: str,
        commit: str,
        emit: OnEvent | None,
        volumes: Mapping[str, VolumeSpec],
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.project = project
        self.commit = commit
        self.emit: OnEvent = emit or (lambda _name, _fields: None)
        self.failures: list[str] = []
        self._objects: dict[str, tuple[str, str]] | None = None
        self.volumes = volumes

    def run(self) -> ChangeSet:
        self.emit("apply.start", {"commit": self.commit, "actions": len(self.plan.actions)})
        return carry_out(
            self.plan, self.dispatch, commit=self.commit, emit=self.emit, failures=self.failures
        )

    def dispatch(self, action: Action) -> None:
        match action:
            case CreateNetwork(network=network):
                self.engine.create_network(network, project=self.project)
            case CreateVolume(volume=volume):
                self.engine.create_volume(volume, project=self.project)
            case CreateSwarmObject(kind=kind, name=name, grant=grant):
                object_id = self.engine.create_object(
                    kind, name, grant.content, labels=object_labels(self.project, grant)
                )
                self.objects()[name] = (object_id, name)
            case RemoveSwarmObject(object=found):
                try:
                    self.engine.remove_object(
                        "secret" if found.kind == "secret" else "config", found.id
                    )
                except Unavailable:
                    raise
                except Exception as exc:
                    # Clean-up: a task still using it keeps it; the next pass tries again.
                    self.warn(f"{found.kind} {found.name}: not removed: {exc}")
            case CreateSwarmService():
                self.create(action)
            case UpdateSwarmService():
                self.update(action)
            case RemoveSwarmService(observed=found):
                self.engine.remove_service(found.id)
                self.wait_gone(found.id)
            case RemoveNetwork(network=network):
                try:
                    self.engine.remove_network(network.id)
                except Unavailable:
                    raise
                except Exception as exc:
                    self.warn(f"network {network.name}: not removed: {exc}")
            case RemoveContainer(container=container):
                self.engine.stop_container(container.id)
                self.engine.remove_container(container.id)
            case CreateService() | RecreateService() | StartService():
                raise TypeError(f"a plain-engine action in swarm mode: {describe(action)}")
            case _:
                assert_never(action)

    # -- services ----------------------------------------------------------

    def spec(self, service: ServiceSpec, config_hash: str) -> dict[str, object]:
        names = [n.name for n in service.networks]
        networks = self.engine.network_ids(names)
        missing = [n for n in names if n not in networks]
        if missing:
            raise StepError(f"service {service.name}: network {', '.join(missing)} not found")
        objects = self.objects()
        for grant in (*service.secrets, *service.configs):
            if object_name(self.project, grant) not in objects:
                raise StepError(
                    f"service {service.name}: {grant.name}: its Swarm object "
                    f"{object_name(self.project, grant)} is missing"
                )
        return service_spec(
            service,
            project=self.project,
            commit=self.commit,
            config_hash=config_hash,
            parts=encode_parts(config_parts(service)),
            networks=networks,
            objects=objects,
            volumes=self.volumes,
        )

    def create(self, action: CreateSwarmService) -> None:
        service = action.service
        service_id = self.engine.create_service(self.spec(service, action.config_hash))
        reason = self.wait_tasks(service, service_id)
        if reason is not None:
            raise StepError(
                f"service {service.name}: created but not ready ({reason}); "
                "left in place as the desired state",
                changed=True,
            )

    def update(self, action: UpdateSwarmService) -> None:
        service, old = action.service, action.old
        spec = self.spec(service, action.config_hash)
        before = self.engine.progress(old.id)
        self.engine.update_service(old.id, before.version, spec)
        if not action.replace_tasks:
            reason = self.wait_tasks(service, old.id)
            if reason is not None:
                raise StepError(f"service {service.name}: scaled but not ready ({reason})")
            return
        reason = self.wait_update(service, old.id, before)
        if reason is not None:
            raise StepError(reason)

    def wait_update(
        self, service: ServiceSpec, service_id: str, before: ServiceProgress
    ) -> str | None:
        """Swarm's verdict on the rolling update just sent: None when it completed."""
        timeout = self.timeout(service)
        fields: dict[str, object] = {
            "service": service.name,
            "container": service_id[:12],
            "until": "updated",
            "timeout_s": timeout,
        }
        self.emit("service.wait", fields)
        deadline = time.monotonic() + timeout
        while True:
            now = self.engine.progress(service_id)
            # The update just sent, not the one before it (which may have ended the same way).
            fresh = now.update_started is not None and now.update_started != before.update_started
            if fresh and now.update_state == "completed":
                reason = self.wait_tasks(service, service_id, announce=False)
                if reason is None:
                    self.emit("service.ready", fields)
                return reason
            if fresh and now.update_state in _FAILED:
                why = now.update_message or now.update_state
                failed = _last_error(now, task_hash(service))
                detail = f"{why}{f': {failed}' if failed else ''}"
                commit = (self.previous_commit(service_id) or "unknown")[:12]
                if now.update_state in _ROLLED_BACK:
                    self.emit("rollback.done", {"service": service.name, "commit": commit})
                    outcome = f"Swarm rolled it back to the previous version (commit {commit})"
                else:
                    outcome = "Swarm paused the update; the previous tasks still run"
                self.emit("service.not_ready", {**fields, "reason": detail})
                return f"service {service.name}: new version failed ({detail}); {outcome}"
            if time.monotonic() >= deadline:
                reason = (
                    f"service {service.name}: update not finished after {timeout:.0f}s "
                    f"(state {now.update_state or 'none'})"
                )
                self.emit("service.not_ready", {**fields, "reason": reason})
                return reason
            time.sleep(POLL_S)

    def wait_tasks(
        self, service: ServiceSpec, service_id: str, *, announce: bool = True
    ) -> str | None:
        """Wait until the service runs as many tasks of its current spec as it should."""
        timeout = self.timeout(service)
        wanted_hash = task_hash(service)
        fields: dict[str, object] = {
            "service": service.name,
            "container": service_id[:12],
            "until": "running",
            "timeout_s": timeout,
        }
        if announce:
            self.emit("service.wait", fields)
        deadline = time.monotonic() + timeout
        while True:
            now = self.engine.progress(service_id)
            current = [t for t in now.tasks if t.task_hash == wanted_hash]
            running = [t for t in current if t.desired == "running" and t.state == "running"]
            wanted = (
                now.replicas
                if now.replicas is not None
                else len([t for t in current if t.desired == "running"])
            )
            failed = [t for t in current if t.state in ("failed", "rejected")]
            if len(running) >= wanted and (wanted > 0 or now.replicas == 0):
                if announce:
                    self.emit("service.ready", fields)
                return None
            if len(failed) >= FAILED_TASKS_LIMIT:
                reason = f"{len(failed)} tasks failed, the last: {failed[0].error or 'no reason'}"
                self.emit("service.not_ready", {**fields, "reason": reason})
                return reason
            if time.monotonic() >= deadline:
                reason = f"{len(running)} of {wanted} tasks running after {timeout:.0f}s"
                if failed:
                    reason += f"; a task failed: {failed[0].error or 'no reason'}"
                self.emit("service.not_ready", {**fields, "reason": reason})
                return reason
            time.sleep(POLL_S)

    def wait_gone(self, service_id: str) -> None:
        """Until the removed service's tasks are gone, so its networks can go too."""
        deadline = time.monotonic() + SCHEDULING_MARGIN_S
        while self.engine.remaining_tasks(service_id) and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def timeout(self, service: ServiceSpec) -> float:
        deploy = deploy_of(service)
        check = service.healthcheck
        per_task = check.max_wait_s() if check is not None and not check.disabled else 30.0
        per_task += monitor_s(deploy.update, check) + deploy.update.delay_s
        batches = math.ceil(max(deploy.replicas, 1) / (deploy.update.parallelism or 1))
        # A rollback takes as long again.
        return 2 * batches * per_task + SCHEDULING_MARGIN_S

    def previous_commit(self, service_id: str) -> str | None:
        found = next(
            (s for s in self.engine.observe_swarm(self.project).services if s.id == service_id),
            None,
        )
        return found.commit if found is not None else None

    def objects(self) -> dict[str, tuple[str, str]]:
        if self._objects is None:
            self._objects = self.engine.object_ids()
        return self._objects

    def warn(self, message: str) -> None:
        self.failures.append(message)
        self.emit("action.warning", {"error": message})


def _last_error(progress: ServiceProgress, wanted_hash: str) -> str:
    """Why the new tasks failed, in Swarm's words (the newest failed task's error)."""
    failed = [
        t
        for t in progress.tasks
        if t.task_hash == wanted_hash and t.state in ("failed", "rejected", "shutdown") and t.error
    ]
    return failed[0].error if failed else ""
