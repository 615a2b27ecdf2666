"""apply() against the in-memory FakeEngine: order, images first, rollback, done lists."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import labels as lbl
from reconciler.decide.actions import (
    Action,
    CreateNetwork,
    CreateService,
    CreateVolume,
    Plan,
    RecreateService,
    RemoveContainer,
    RemoveNetwork,
    StartService,
    describe,
)
from reconciler.decide.hashing import config_parts, encode_parts
from reconciler.deploy.applying import ChangeSet, apply
from reconciler.errors import ApplyError, Conflict, ImageUnavailable, Unavailable
from reconciler.model.desired import (
    Dependency,
    HealthCheck,
    NetworkSpec,
    ServiceNetwork,
    ServiceSpec,
    VolumeSpec,
)
from reconciler.model.observed import ObservedContainer
from tests.fixtures.fake_engine import FakeEngine, FakeEngineError

PROJECT = "shop"
OLD_COMMIT = "a" * 40
NEW_COMMIT = "b" * 40
CHECK = HealthCheck(test=("CMD-SHELL", "true"), interval_s=1, timeout_s=1, retries=1)


def service(name: str, **fields: Any) -> ServiceSpec:
    values: dict[str, Any] = {
        "name": name,
        "image": f"{name}:1",
        "networks": (ServiceNetwork(name=f"{PROJECT}_default"),),
    }
    values.update(fields)
    return ServiceSpec.model_validate(values)


def ours(name: str) -> dict[str, str]:
    return {
        lbl.PROJECT: PROJECT,
        lbl.SERVICE: name,
        lbl.COMMIT: OLD_COMMIT,
        lbl.CONFIG_HASH: "oldhash",
    }


def run(engine: FakeEngine, *actions: Action) -> ChangeSet:
    return apply(Plan(actions=actions), engine, project=PROJECT, commit=NEW_COMMIT)


def old_web(engine: FakeEngine) -> ObservedContainer:
    return engine.add_container("shop-web-1", labels=ours("web"), image="web:0")


NETWORK = NetworkSpec(key="default", name="shop_default")
VOLUME = VolumeSpec(key="data", name="shop_data")


def test_actions_run_in_plan_order_after_the_images() -> None:
    engine = FakeEngine()
    stale = engine.add_container("shop-old-1", labels=ours("old"))
    stale_net = engine.add_network("shop_legacy", labels={lbl.PROJECT: PROJECT})
    actions: tuple[Action, ...] = (
        CreateNetwork(NETWORK, reason="missing"),
        CreateVolume(VOLUME, reason="missing"),
        CreateService(service("db"), config_hash="h-db", reason="missing"),
        CreateService(service("web"), config_hash="h-web", reason="missing"),
        RemoveContainer(stale, reason="not in compose.yaml"),
        RemoveNetwork(stale_net, reason="not in compose.yaml"),
    )

    changes = run(engine, *actions)

    assert engine.call_names() == [
        "ensure_image",
        "ensure_image",
        "create_network",
        "create_volume",
        "run_container",
        "run_container",
        "stop_container",
        "remove_container",
        "remove_network",
    ]
    assert changes == ChangeSet(commit=NEW_COMMIT, done=tuple(describe(a) for a in actions))
    assert changes.changed


def test_containers_get_name_and_labels_of_the_project() -> None:
    engine = FakeEngine()
    web = service("web", labels={"team": "shop", lbl.PROJECT: "forged"})

    run(engine, CreateService(web, config_hash="h-web", reason="missing"))

    container = engine.by_name("shop-web-1")
    assert container is not None
    assert container.labels == {
        "team": "shop",
        lbl.PROJECT: PROJECT,
        lbl.SERVICE: "web",
        lbl.COMMIT: NEW_COMMIT,
        lbl.CONFIG_HASH: "h-web",
        lbl.CONFIG_PARTS: encode_parts(config_parts(web)),
    }


def test_a_missing_image_touches_nothing_and_names_every_missing_image() -> None:
    engine = FakeEngine()
    old = old_web(engine)
    engine.missing_images = {"web:2", "db:2"}
    actions: tuple[Action, ...] = (
        CreateNetwork(NETWORK, reason="missing"),
        CreateService(service("db", image="db:2"), config_hash="h", reason="missing"),
        RecreateService(service("web", image="web:2"), config_hash="h", old=old, reason="x"),
    )

    with pytest.raises(ApplyError) as caught:
        run(engine, *actions)

    assert caught.value.done == []
    assert "service db: image db:2" in caught.value.message
    assert "service web: image web:2" in caught.value.message
    assert set(engine.call_names()) == {"ensure_image"}
    assert engine.containers[old.id].state == "running"
    assert "nothing was changed" in str(caught.value)
    assert isinstance(caught.value.__cause__, ImageUnavailable)


def test_each_image_is_ensured_once() -> None:
    engine = FakeEngine()
    run(
        engine,
        CreateService(service("a", image="shared:1"), config_hash="h", reason="x"),
        CreateService(service("b", image="shared:1"), config_hash="h", reason="x"),
    )
    assert engine.call_names().count("ensure_image") == 1


def test_recreate_replaces_the_old_container_when_the_new_one_is_ready() -> None:
    engine = FakeEngine()
    old = old_web(engine)
    web = service("web", image="web:2", healthcheck=CHECK)

    changes = run(engine, RecreateService(web, config_hash="h2", old=old, reason="changed"))

    assert engine.call_names() == [
        "ensure_image",
        "stop_container",
        "rename_container",
        "run_container",
        "wait_ready",
        "remove_container",
    ]
    assert engine.calls[2] == ("rename_container", old.id, f"shop-web-1-old-{old.id[:12]}")
    assert old.id not in engine.containers
    new = engine.by_name("shop-web-1")
    assert new is not None
    assert new.labels[lbl.COMMIT] == NEW_COMMIT
    assert new.state == "running"
    assert changes.failures == ()


def test_an_unhealthy_recreate_rolls_back_to_the_old_container() -> None:
    engine = FakeEngine()
    old = old_web(engine)
    engine.not_ready["web"] = "unhealthy"
    done_before = CreateNetwork(NETWORK, reason="missing")
    web = service("web", image="web:2", healthcheck=CHECK)

    with pytest.raises(ApplyError) as caught:
        run(engine, done_before, RecreateService(web, config_hash="h2", old=old, reason="x"))

    assert caught.value.message == (
        "service web: new version not healthy (unhealthy); "
        f"rolled back to the previous container (commit {OLD_COMMIT[:12]})"
    )
    assert caught.value.done == [describe(done_before)]
    assert list(engine.containers) == [old.id]
    back = engine.containers[old.id]
    assert (back.name, back.state, back.labels) == ("shop-web-1", "running", ours("web"))


def test_a_recreate_that_cannot_start_rolls_back() -> None:
    engine = FakeEngine()
    old = old_web(engine)
    engine.fail["run_container"] = FakeEngineError("port is already allocated")

    with pytest.raises(ApplyError) as caught:
        run(engine, RecreateService(service("web"), config_hash="h2", old=old, reason="x"))

    assert "port is already allocated" in caught.value.message
    assert "rolled back" in caught.value.message
    assert caught.value.done == []
    back = engine.containers[old.id]
    assert (back.name, back.state) == ("shop-web-1", "running")


def test_a_failed_rollback_says_where_the_old_container_is() -> None:
    engine = FakeEngine()
    old = old_web(engine)
    engine.not_ready["web"] = "unhealthy"
    engine.fail["start_container"] = FakeEngineError("engine hiccup")

    with pytest.raises(ApplyError) as caught:
        run(engine, RecreateService(service("web"), config_hash="h2", old=old, reason="x"))

    assert "rollback failed (engine hiccup)" in caught.value.message
    assert "docker start shop-web-1" in caught.value.message


def test_a_stopped_old_container_stays_stopped_after_rollback() -> None:
    engine = FakeEngine()
    old = engine.add_container("shop-web-1", labels=ours("web"), state="exited")
    engine.not_ready["web"] = "exited with code 1"

    with pytest.raises(ApplyError):
        run(engine, RecreateService(service("web"), config_hash="h2", old=old, reason="x"))

    assert engine.containers[old.id].state == "exited"
    assert engine.containers[old.id].name == "shop-web-1"


def test_done_lists_what_was_completed_before_a_failure() -> None:
    engine = FakeEngine()
    first = CreateNetwork(NETWORK, reason="missing")
    second = CreateVolume(VOLUME, reason="missing")
    engine.fail_for[("run_container", "web")] = FakeEngineError("no such image")

    with pytest.raises(ApplyError) as caught:
        run(
            engine,
            first,
            second,
            CreateService(service("web"), config_hash="h", reason="missing"),
            CreateService(service("db"), config_hash="h", reason="missing"),
        )

    assert caught.value.done == [describe(first), describe(second)]
    assert caught.value.message == "service web: no such image"
    assert engine.by_name("shop-db-1") is None  # nothing after the failure ran


def test_unavailable_in_the_middle_is_an_apply_error_with_its_cause() -> None:
    engine = FakeEngine()
    first = CreateNetwork(NETWORK, reason="missing")
    engine.fail["create_volume"] = Unavailable("Docker engine unavailable at unix:///x: gone")

    with pytest.raises(ApplyError) as caught:
        run(engine, first, CreateVolume(VOLUME, reason="missing"))

    assert caught.value.done == [describe(first)]
    assert isinstance(caught.value.__cause__, Unavailable)


def test_a_created_service_waits_only_when_checked_or_awaited() -> None:
    engine = FakeEngine()
    run(
        engine,
        CreateService(service("plain"), config_hash="h", reason="x"),
        CreateService(service("checked", healthcheck=CHECK), config_hash="h", reason="x"),
        CreateService(service("db"), config_hash="h", reason="x"),
        CreateService(
            service("web", depends_on=(Dependency(service="db", condition="service_healthy"),)),
            config_hash="h",
            reason="x",
        ),
        CreateService(
            service("off", healthcheck=HealthCheck(test=("NONE",))), config_hash="h", reason="x"
        ),
    )
    waited = [engine.containers[call[1]].name for call in engine.calls if call[0] == "wait_ready"]
    assert waited == ["shop-checked-1", "shop-db-1"]


def test_a_created_service_that_is_not_ready_stays_and_fails_the_apply() -> None:
    engine = FakeEngine()
    engine.not_ready["web"] = "unhealthy"
    create = CreateService(service("web", healthcheck=CHECK), config_hash="h", reason="x")

    with pytest.raises(ApplyError) as caught:
        run(engine, create)

    assert "service web: created but not ready (unhealthy)" in caught.value.message
    assert caught.value.done == [describe(create)]
    assert engine.by_name("shop-web-1") is not None


@pytest.mark.parametrize(("code", "fails"), [(0, False), (3, True)])
def test_completed_successfully_dependency_waits_for_exit_code_zero(code: int, fails: bool) -> None:
    engine = FakeEngine()
    engine.exit_codes["migrate"] = code
    migrate = CreateService(service("migrate"), config_hash="h", reason="x")
    web = CreateService(
        service(
            "web",
            depends_on=(Dependency(service="migrate", condition="service_completed_successfully"),),
        ),
        config_hash="h",
        reason="x",
    )

    if fails:
        with pytest.raises(ApplyError, match="exited with code 3"):
            run(engine, migrate, web)
        assert engine.by_name("shop-web-1") is None
    else:
        run(engine, migrate, web)
        assert engine.by_name("shop-web-1") is not None
    assert "wait_ready" not in engine.call_names()


def test_start_service_starts_and_waits_for_its_health_check() -> None:
    engine = FakeEngine()
    stopped = engine.add_container("shop-web-1", labels=ours("web"), state="exited")

    run(engine, StartService(service("web", healthcheck=CHECK), container=stopped, reason="x"))

    assert engine.call_names() == ["start_container", "wait_ready"]
    assert engine.containers[stopped.id].state == "running"


def test_a_network_that_cannot_be_removed_is_a_failure_not_an_error() -> None:
    engine = FakeEngine()
    net = engine.add_network("shop_legacy", labels={lbl.PROJECT: PROJECT})
    engine.fail["remove_network"] = FakeEngineError("network has active endpoints")

    changes = run(engine, RemoveNetwork(net, reason="not in compose.yaml"))

    assert changes.failures == ("network shop_legacy: not removed: network has active endpoints",)


def test_every_step_is_reported_as_an_event() -> None:
    engine = FakeEngine()
    events: list[tuple[str, dict[str, object]]] = []
    actions = (
        CreateNetwork(NETWORK, reason="missing"),
        CreateService(service("web", healthcheck=CHECK), config_hash="h", reason="missing"),
    )

    apply(
        Plan(actions=actions),
        engine,
        project=PROJECT,
        commit=NEW_COMMIT,
        on_event=lambda name, fields: events.append((name, fields)),
    )

    names = [name for name, _ in events]
    assert names == [
        "apply.start",
        "image.start",
        "image.progress",
        "image.done",
        "action.start",
        "action.done",
        "action.start",
        "service.wait",
        "service.ready",
        "action.done",
        "apply.done",
    ]
    assert events[-2][1]["action"] == describe(actions[1])


def test_a_plan_with_conflicts_is_refused() -> None:
    engine = FakeEngine()
    plan = Plan(
        actions=(CreateNetwork(NETWORK, reason="missing"),),
        conflicts=("container shop-web-1 is not ours",),
    )
    with pytest.raises(Conflict):
        apply(plan, engine, project=PROJECT, commit=NEW_COMMIT)
    assert engine.calls == []


def test_a_recreate_whose_wait_fails_rolls_back_and_keeps_the_cause() -> None:
    engine = FakeEngine()
    old = old_web(engine)
    engine.fail["wait_ready"] = Unavailable("Docker engine unavailable at unix:///x: gone")
    web = service("web", healthcheck=CHECK)

    with pytest.raises(ApplyError) as caught:
        run(engine, RecreateService(web, config_hash="h2", old=old, reason="x"))

    assert "rolled back" in caught.value.message
    assert isinstance(caught.value.__cause__, Unavailable)
    assert list(engine.containers) == [old.id]
    assert engine.containers[old.id].state == "running"


def test_a_recreate_hands_the_old_containers_anonymous_volumes_to_the_new_one() -> None:
    engine = FakeEngine()
    old = old_web(engine)
    engine.containers[old.id].anonymous = {"/app/node_modules": "vol-kept"}
    engine.anonymous_volumes.add("vol-kept")
    web = service("web", image="web:2", anonymous_volumes=[{"target": "/app/node_modules"}])

    run(engine, RecreateService(web, config_hash="h", old=old, reason="image changed"))

    new = engine.by_name("shop-web-1")
    assert new is not None
    assert new.id != old.id
    assert new.anonymous == {"/app/node_modules": "vol-kept"}
    assert old.id not in engine.containers  # removed; its volume was not
    assert "vol-kept" in engine.anonymous_volumes


def test_a_rolled_back_recreate_leaves_the_anonymous_volume_with_the_old_container() -> None:
    engine = FakeEngine()
    old = old_web(engine)
    engine.containers[old.id].anonymous = {"/cache": "vol-old"}
    engine.not_ready["web"] = "unhealthy"
    web = service("web", image="web:2", anonymous_volumes=[{"target": "/cache"}])

    with pytest.raises(ApplyError, match="rolled back"):
        run(engine, RecreateService(web, config_hash="h", old=old, reason="image changed"))

    back = engine.by_name("shop-web-1")
    assert back is not None
    assert back.id == old.id
    assert back.anonymous == {"/cache": "vol-old"}
    assert back.state == "running"


def test_a_new_service_gets_fresh_anonymous_volumes() -> None:
    engine = FakeEngine()
    web = service("web", anonymous_volumes=[{"target": "/cache"}])

    run(engine, CreateService(web, config_hash="h", reason="missing"))

    new = engine.by_name("shop-web-1")
    assert new is not None
    assert set(new.anonymous) == {"/cache"}
    assert new.anonymous["/cache"] in engine.anonymous_volumes
