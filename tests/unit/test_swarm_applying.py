"""apply_swarm's reading of Swarm's verdict, over a scripted Swarm (no engine)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.decide.actions import Plan, UpdateSwarmService
from reconciler.decide.hashing import config_hash
from reconciler.decide.swarm_specs import task_hash
from reconciler.deploy import swarm_applying
from reconciler.deploy.swarm_applying import apply_swarm
from reconciler.errors import ApplyError
from reconciler.model.desired import ServiceNetwork, ServiceSpec, SwarmDeploy
from reconciler.model.observed import (
    ObservedSwarm,
    ObservedSwarmService,
    ServiceProgress,
    TaskState,
)

SERVICE = ServiceSpec(
    name="web",
    image="registry.example/web:2",
    networks=(ServiceNetwork(name="shop_default"),),
    deploy=SwarmDeploy(replicas=2),
)
OLD = ObservedSwarmService(
    id="svc1", name="shop_web", version=4, labels={"dev.reconciler.commit": "c0ffee00c0ffee"}
)


class ScriptedSwarm:
    """Answers ``progress`` from a script: one ServiceProgress per call, the last repeated."""

    def __init__(self, script: list[ServiceProgress]) -> None:
        self.script: Iterator[ServiceProgress] = iter(script)
        self.last = script[-1]
        self.updates: list[tuple[str, int]] = []

    def progress(self, service_id: str) -> ServiceProgress:
        self.last = next(self.script, self.last)
        return self.last

    def update_service(self, service_id: str, version: int, spec: dict[str, Any]) -> None:
        self.updates.append((service_id, version))

    def network_ids(self, names: list[str]) -> dict[str, str]:
        return {n: f"id-{n}" for n in names}

    def object_ids(self) -> dict[str, tuple[str, str]]:
        return {}

    def observe_swarm(self, project: str) -> ObservedSwarm:
        return ObservedSwarm(services=(OLD,))


def progress(state: str | None, started: str | None, *tasks: TaskState, msg: str = "") -> Any:
    return ServiceProgress(
        version=5,
        update_state=state,
        update_message=msg,
        update_started=started,
        replicas=2,
        tasks=tasks,
    )


def running_task(n: int) -> TaskState:
    return TaskState(id=f"t{n}", state="running", desired="running", task_hash=task_hash(SERVICE))


def update(engine: ScriptedSwarm) -> Any:
    plan = Plan(actions=(UpdateSwarmService(SERVICE, config_hash(SERVICE), OLD, "image"),))
    return apply_swarm(plan, engine, project="shop", commit="beef")  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swarm_applying, "POLL_S", 0.0)


def test_a_completed_update_with_its_tasks_running_is_done() -> None:
    engine = ScriptedSwarm(
        [
            progress("completed", "earlier"),  # before: the last update, long done
            progress("updating", "now"),
            progress("completed", "now", running_task(1), running_task(2)),
        ]
    )
    done = update(engine)
    assert engine.updates == [("svc1", 5)]
    assert done.done == ("update service web: image",)


def test_a_rollback_is_a_failed_deploy_naming_the_commit_it_went_back_to() -> None:
    failed = TaskState(
        id="t9",
        state="failed",
        desired="shutdown",
        error="task: non-zero exit (1): dockerexec: unhealthy container",
        task_hash=task_hash(SERVICE),
    )
    engine = ScriptedSwarm(
        [
            progress(None, None),
            progress("updating", "now"),
            progress("rollback_started", "now", failed),
            progress("rollback_completed", "now", failed, msg="rollback completed"),
        ]
    )
    with pytest.raises(ApplyError) as raised:
        update(engine)
    message = str(raised.value)
    assert "service web: new version failed (rollback completed: task: non-zero exit" in message
    assert "Swarm rolled it back to the previous version (commit c0ffee00c0ff)" in message


def test_the_previous_updates_verdict_is_not_taken_for_this_ones() -> None:
    # The last update ended "rollback_completed"; this one is judged on its own.
    engine = ScriptedSwarm(
        [
            progress("rollback_completed", "earlier"),
            progress("rollback_completed", "earlier"),
            progress("completed", "now", running_task(1), running_task(2)),
        ]
    )
    assert update(engine).done


def test_a_paused_update_is_a_failed_deploy() -> None:
    engine = ScriptedSwarm([progress(None, None), progress("paused", "now", msg="update paused")])
    with pytest.raises(ApplyError, match="Swarm paused the update"):
        update(engine)
