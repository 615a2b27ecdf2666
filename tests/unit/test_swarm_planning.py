"""Swarm mode's deciding part: the spec sent for a service, and the plan (no engine)."""

from __future__ import annotations

import hashlib

from reconciler import labels
from reconciler.decide.actions import (
    CreateNetwork,
    CreateSwarmObject,
    CreateSwarmService,
    RemoveSwarmObject,
    RemoveSwarmService,
    UpdateSwarmService,
    describe,
    summarize,
)
from reconciler.decide.hashing import config_hash, config_parts, encode_parts
from reconciler.decide.swarm_planning import plan_swarm
from reconciler.decide.swarm_specs import (
    STACK_NAMESPACE,
    TASK_HASH,
    object_name,
    service_spec,
    task_hash,
)
from reconciler.model.desired import (
    DesiredState,
    FileGrant,
    HealthCheck,
    NetworkSpec,
    ServiceNetwork,
    ServiceSpec,
    SwarmDeploy,
    UpdatePolicy,
)
from reconciler.model.observed import (
    ObservedNetwork,
    ObservedSwarm,
    ObservedSwarmObject,
    ObservedSwarmService,
)

PROJECT = "shop"
NETWORK = NetworkSpec(key="default", name="shop_default", driver="overlay", attachable=True)


def grant(name: str, content: bytes, *, sensitive: bool = False) -> FileGrant:
    return FileGrant(
        name=name,
        target=f"/run/secrets/{name}" if sensitive else f"/{name}",
        content_hash=hashlib.sha256(content).hexdigest(),
        content=content,
        sensitive=sensitive,
    )


def web(**changes: object) -> ServiceSpec:
    base = ServiceSpec(
        name="web",
        image="registry.example/shop/web:1.4.2",
        command=("serve", "--port", "8080"),
        environment={"MODE": "production"},
        networks=(ServiceNetwork(name="shop_default"),),
        healthcheck=HealthCheck(test=("CMD", "true"), interval_s=2, timeout_s=1, retries=3),
        configs=(grant("page", b"<h1>hello</h1>"),),
        secrets=(grant("token", b"s3cret", sensitive=True),),
        deploy=SwarmDeploy(replicas=2),
    )
    return base.model_copy(update=changes)


def desired(*services: ServiceSpec) -> DesiredState:
    return DesiredState(
        project=PROJECT,
        services={s.name: s for s in services},
        networks={"default": NETWORK},
        volumes={},
    )


def running(service: ServiceSpec, *, commit: str = "c1", **fields: object) -> ObservedSwarmService:
    """The Swarm service a previous pass made of ``service``."""
    values: dict[str, object] = {
        "id": f"id-{service.name}",
        "name": f"{PROJECT}_{service.name}",
        "version": 7,
        "labels": {
            labels.PROJECT: PROJECT,
            labels.SERVICE: service.name,
            labels.COMMIT: commit,
            labels.CONFIG_HASH: config_hash(service),
            labels.CONFIG_PARTS: encode_parts(config_parts(service)),
        },
        "task_hash": task_hash(service),
        "replicas": service.deploy.replicas if service.deploy is not None else 1,
        "objects": frozenset(object_name(PROJECT, g) for g in (*service.secrets, *service.configs)),
    }
    values.update(fields)
    return ObservedSwarmService(**values)  # type: ignore[arg-type]


def objects_of(service: ServiceSpec) -> tuple[ObservedSwarmObject, ...]:
    return tuple(
        ObservedSwarmObject(
            kind=kind,
            id=f"obj-{g.name}",
            name=object_name(PROJECT, g),
            labels={labels.PROJECT: PROJECT},
        )
        for kind, grants in (("secret", service.secrets), ("config", service.configs))
        for g in grants
    )


def converged(service: ServiceSpec, **extra: object) -> ObservedSwarm:
    network = ObservedNetwork(id="net1", name="shop_default", labels={labels.PROJECT: PROJECT})
    return ObservedSwarm(
        services=(running(service),),
        objects=objects_of(service),
        networks=(network,),
        **extra,  # type: ignore[arg-type]
    )


def test_a_converged_stack_plans_nothing() -> None:
    assert plan_swarm(desired(web()), converged(web())).empty


def test_a_new_stack_creates_its_network_objects_and_service_in_that_order() -> None:
    plan = plan_swarm(desired(web()), ObservedSwarm())
    kinds = [type(a) for a in plan.actions]
    assert kinds == [CreateNetwork, CreateSwarmObject, CreateSwarmObject, CreateSwarmService]
    assert {a.kind for a in plan.actions if isinstance(a, CreateSwarmObject)} == {
        "secret",
        "config",
    }


def test_a_changed_config_is_a_new_object_and_a_rolling_update_naming_it() -> None:
    new = web(configs=(grant("page", b"<h1>new</h1>"),))
    plan = plan_swarm(desired(new), converged(web()))
    created = [a for a in plan.actions if isinstance(a, CreateSwarmObject)]
    assert [a.name for a in created] == [object_name(PROJECT, new.configs[0])]
    (update,) = [a for a in plan.actions if isinstance(a, UpdateSwarmService)]
    assert update.replace_tasks
    assert describe(update) == "update service web: configs.page changed"
    # The old object stays: the running spec names it (and a rollback needs it).
    assert not [a for a in plan.actions if isinstance(a, RemoveSwarmObject)]


def test_more_replicas_scale_without_replacing_tasks() -> None:
    plan = plan_swarm(desired(web(deploy=SwarmDeploy(replicas=5))), converged(web()))
    (update,) = plan.actions
    assert isinstance(update, UpdateSwarmService)
    assert not update.replace_tasks
    assert describe(update) == "scale service web: deploy.replicas changed"
    assert summarize(plan) == "1 to scale: web (deploy.replicas)"


def test_an_object_no_spec_names_is_pruned_and_one_a_rollback_needs_is_kept() -> None:
    old_page = grant("page", b"<h1>v0</h1>")
    older_page = grant("page", b"<h1>v-1</h1>")
    service = web()
    observed = converged(service)
    kept = ObservedSwarmObject(
        "config", "o-prev", object_name(PROJECT, old_page), {labels.PROJECT: PROJECT}
    )
    stale = ObservedSwarmObject(
        "config", "o-stale", object_name(PROJECT, older_page), {labels.PROJECT: PROJECT}
    )
    theirs = ObservedSwarmObject("config", "o-theirs", "someone_elses", {})
    previous = running(service, objects=running(service).objects | {kept.name})
    observed = ObservedSwarm(
        services=(previous,),
        objects=(*observed.objects, kept, stale, theirs),
        networks=observed.networks,
    )
    plan = plan_swarm(desired(service), observed)
    assert [a.object.name for a in plan.actions if isinstance(a, RemoveSwarmObject)] == [stale.name]


def test_a_service_no_longer_declared_is_removed_and_anothers_service_is_a_conflict() -> None:
    worker = web(name="worker", configs=(), secrets=())
    observed = converged(web())
    theirs = ObservedSwarmService(id="x", name="shop_web", version=1, labels={})
    plan = plan_swarm(
        desired(web()),
        ObservedSwarm(
            services=(*observed.services, running(worker)),
            objects=observed.objects,
            networks=observed.networks,
        ),
    )
    assert [a.observed.name for a in plan.actions if isinstance(a, RemoveSwarmService)] == [
        "shop_worker"
    ]
    conflicted = plan_swarm(
        desired(web()), ObservedSwarm(services=(theirs,), networks=observed.networks)
    )
    assert conflicted.conflicts
    assert "docker service rm shop_web" in conflicted.conflicts[0]


def test_the_spec_carries_our_labels_the_stack_label_and_a_task_hash() -> None:
    service = web()
    page = object_name(PROJECT, service.configs[0])
    token = object_name(PROJECT, service.secrets[0])
    spec = service_spec(
        service,
        project=PROJECT,
        commit="abc",
        config_hash="h",
        parts="{}",
        networks={"shop_default": "net1"},
        objects={page: ("id-page", page), token: ("id-token", token)},
    )
    assert spec["Name"] == "shop_web"
    assert spec["Labels"][STACK_NAMESPACE] == PROJECT
    assert spec["Labels"][labels.PROJECT] == PROJECT
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Labels"][TASK_HASH] == task_hash(service)
    # Compose's command keeps the image's entrypoint: Swarm's Args, not Command.
    assert container["Args"] == ["serve", "--port", "8080"]
    assert "Command" not in container
    assert container["Secrets"][0]["SecretName"] == token
    assert container["Configs"][0]["File"]["Name"] == "/page"
    assert spec["TaskTemplate"]["Networks"] == [{"Target": "net1", "Aliases": ["web"]}]
    assert spec["Mode"] == {"Replicated": {"Replicas": 2}}
    update = spec["UpdateConfig"]
    assert (update["Order"], update["FailureAction"]) == ("start-first", "rollback")
    # Watched long enough for the health check to fail: (retries + 1) x interval + timeout.
    assert update["Monitor"] == 9 * 1_000_000_000


def test_a_secrets_object_name_carries_no_plain_digest_of_it() -> None:
    secret = grant("token", b"hunter2", sensitive=True)
    plain = hashlib.sha256(b"hunter2").hexdigest()
    assert plain[:12] not in object_name(PROJECT, secret)
    config = grant("page", b"hunter2")
    assert object_name(PROJECT, config) == f"{PROJECT}_page_{plain[:12]}"


def test_an_explicit_stop_first_order_is_kept() -> None:
    service = web(deploy=SwarmDeploy(update=UpdatePolicy(order="stop-first")))
    spec = service_spec(
        service.model_copy(update={"configs": (), "secrets": ()}),
        project=PROJECT,
        commit="abc",
        config_hash="h",
        parts="{}",
        networks={"shop_default": "net1"},
        objects={},
    )
    assert spec["UpdateConfig"]["Order"] == "stop-first"


def test_a_service_scaled_by_hand_is_scaled_back() -> None:
    observed = converged(web())
    scaled = ObservedSwarm(
        services=(running(web(), replicas=0),),
        objects=observed.objects,
        networks=observed.networks,
    )
    (update,) = plan_swarm(desired(web()), scaled).actions
    assert isinstance(update, UpdateSwarmService)
    assert not update.replace_tasks
    assert describe(update) == "scale service web: runs 0 replicas, 2 declared"


def test_the_containers_of_services_deployed_before_the_swarm_go_first() -> None:
    from reconciler.decide.actions import RemoveContainer
    from reconciler.model.observed import ObservedContainer

    before = ObservedContainer(
        id="c1", name="shop-web-1", labels={labels.PROJECT: PROJECT, labels.SERVICE: "web"}
    )
    helper = ObservedContainer(
        id="c2", name="shop-helper-x", labels={labels.PROJECT: PROJECT, labels.HELPER: "backup"}
    )
    other = ObservedContainer(id="c3", name="other-web-1", labels={labels.PROJECT: "other"})
    # The reconciler's own container runs beside the Swarm: never removed.
    daemon = ObservedContainer(
        id="c4",
        name="shop-reconciler-1",
        labels={labels.PROJECT: PROJECT, labels.SERVICE: "reconciler"},
    )
    plan = plan_swarm(desired(web()), ObservedSwarm(containers=(before, helper, other, daemon)))
    first = plan.actions[0]
    assert isinstance(first, RemoveContainer)
    assert first.container.id == "c1"
    assert not [a for a in plan.actions[1:] if isinstance(a, RemoveContainer)]


def test_a_node_makes_a_volume_with_its_driver_options_and_our_labels() -> None:
    from reconciler.model.desired import Mount, VolumeSpec

    nfs = VolumeSpec(
        key="site",
        name="shop_site",
        driver="local",
        driver_opts={"type": "nfs", "o": "addr=10.0.0.10,nfsvers=4", "device": ":/export/site"},
    )
    service = web(
        configs=(), secrets=(), mounts=(Mount(type="volume", source="shop_site", target="/srv"),)
    )
    spec = service_spec(
        service,
        project=PROJECT,
        commit="abc",
        config_hash="h",
        parts="{}",
        networks={"shop_default": "net1"},
        objects={},
        volumes={"shop_site": nfs},
    )
    (mount,) = spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert mount["Source"] == "shop_site"
    assert mount["VolumeOptions"]["DriverConfig"] == {"Name": "local", "Options": nfs.driver_opts}
    assert mount["VolumeOptions"]["Labels"][labels.PROJECT] == PROJECT
