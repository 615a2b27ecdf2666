"""DockerEngine and apply() against the real Docker engine, with the local busybox image.

Every test works in its own project (``project_name``), whose containers,
networks and volumes are removed afterwards; images and bystander containers
a test makes are removed by that test.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import pytest

from reconciler import labels as lbl
from reconciler.adapters.docker_engine import CONTEXT_HASH_LABEL, DockerEngine
from reconciler.decide.actions import (
    CreateNetwork,
    CreateService,
    CreateVolume,
    Plan,
    RecreateService,
    RemoveContainer,
    RemoveNetwork,
)
from reconciler.decide.planning import plan as plan_for
from reconciler.deploy.applying import apply
from reconciler.errors import ApplyError, EngineError, ImageUnavailable, Unavailable
from reconciler.model.desired import (
    AnonymousVolume,
    BuildSpec,
    DesiredState,
    HealthCheck,
    Mount,
    NetworkSpec,
    PortBinding,
    ServiceNetwork,
    ServiceSpec,
    VolumeSpec,
)
from reconciler.model.observed import Observed, ObservedContainer
from tests.fixtures.docker_engine import remove_project

pytestmark = pytest.mark.integration

COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40
HTTP_CHECK = HealthCheck(
    test=("CMD-SHELL", "wget -q -O- http://127.0.0.1/ || exit 1"),
    interval_s=1,
    timeout_s=2,
    retries=3,
)
# Keeps its first version in /data/www/first (the named volume) and serves it.
WEB_SCRIPT = (
    "mkdir -p /data/www && "
    "{ test -f /data/www/first || echo $VERSION > /data/www/first; } && "
    "echo $VERSION > /data/www/version && cp /data/www/first /data/www/index.html && "
    "exec httpd -f -p 80 -h /data/www"
)


def network_spec(project: str) -> NetworkSpec:
    return NetworkSpec(key="default", name=f"{project}_default")


def volume_spec(project: str) -> VolumeSpec:
    return VolumeSpec(key="data", name=f"{project}_data")


def web_service(project: str, image: str, *, version: str, **fields: Any) -> ServiceSpec:
    values: dict[str, Any] = {
        "name": "web",
        "image": image,
        "command": ("sh", "-c", WEB_SCRIPT),
        "environment": {"VERSION": version},
        "ports": (PortBinding(target=80, host_ip="127.0.0.1"),),
        "mounts": (Mount(type="volume", source=f"{project}_data", target="/data"),),
        "networks": (ServiceNetwork(name=f"{project}_default", aliases=("www",)),),
        "healthcheck": HTTP_CHECK,
        "restart": "unless-stopped",
        # busybox as PID 1 ignores SIGTERM: do not wait 10s on every stop.
        "stop_grace_period_s": 1,
    }
    values.update(fields)
    return ServiceSpec.model_validate(values)


def our_labels(project: str, service: str, commit: str = COMMIT_1) -> dict[str, str]:
    return {
        lbl.PROJECT: project,
        lbl.SERVICE: service,
        lbl.COMMIT: commit,
        lbl.CONFIG_HASH: "h",
    }


def containers_of(observed: Observed, project: str) -> list[ObservedContainer]:
    return [c for c in observed.containers if c.project == project]


def deploy_v1(engine: DockerEngine, project: str, image: str) -> ObservedContainer:
    plan = Plan(
        actions=(
            CreateNetwork(network_spec(project), reason="missing"),
            CreateVolume(volume_spec(project), reason="missing"),
            CreateService(web_service(project, image, version="v1"), config_hash="h1", reason="x"),
        )
    )
    apply(plan, engine, project=project, commit=COMMIT_1)
    (web,) = containers_of(engine.observe(project), project)
    return web


def http_get(port: str) -> bytes:
    # No proxy: the published port is on this machine's loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/", timeout=10) as response:
        body: bytes = response.read()
    return body


@pytest.fixture
def bystander(
    docker_client: docker.DockerClient, project_name: str, busybox_image: str
) -> Iterator[Any]:
    """A running container that is not ours, with a name close to ours."""
    container = docker_client.containers.run(
        busybox_image,
        ["sleep", "300"],
        name=f"{project_name}-bystander",
        labels={"test.bystander": project_name},
        detach=True,
    )
    yield container
    container.remove(force=True)


@pytest.fixture
def request_paths(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """The API paths (without the version prefix) requested while the test runs."""
    paths: list[str] = []

    def hook(response: Any, *_args: Any, **_kwargs: Any) -> None:
        path = urlparse(response.request.url).path
        paths.append(re.sub(r"^/v[0-9.]+", "", path))

    hooks = docker_client.api.hooks["response"]
    hooks.append(hook)
    yield paths
    hooks.remove(hook)


def test_observe_sees_ours_and_others_with_one_list_call_per_kind(
    engine: DockerEngine,
    project_name: str,
    busybox_image: str,
    bystander: Any,
    request_paths: list[str],
) -> None:
    service = ServiceSpec(name="sleeper", image=busybox_image, command=("sleep", "300"))
    engine.create_volume(volume_spec(project_name), project=project_name)
    ours_id = engine.run_container(
        service,
        name=lbl.container_name(project_name, "sleeper"),
        labels=our_labels(project_name, "sleeper"),
    )
    request_paths.clear()

    observed = engine.observe(project_name)

    assert sorted(request_paths) == ["/containers/json", "/networks", "/volumes"]
    by_id = {c.id: c for c in observed.containers}
    assert by_id[ours_id].name == f"{project_name}-sleeper-1"
    assert by_id[ours_id].project == project_name
    assert by_id[ours_id].state == "running"
    assert by_id[ours_id].health is None
    assert by_id[ours_id].image == busybox_image
    assert by_id[bystander.id].name == f"{project_name}-bystander"
    assert by_id[bystander.id].project is None
    volume = next(v for v in observed.volumes if v.name == f"{project_name}_data")
    assert volume.labels[lbl.VOLUME] == "data"


def test_a_service_runs_with_port_volume_network_and_health_check(
    engine: DockerEngine, docker_client: docker.DockerClient, project_name: str, busybox_image: str
) -> None:
    engine.create_network(network_spec(project_name), project=project_name)
    engine.create_volume(volume_spec(project_name), project=project_name)
    service = web_service(project_name, busybox_image, version="v1")
    engine.ensure_image(service)  # present: no pull is tried

    container_id = engine.run_container(
        service,
        name=lbl.container_name(project_name, "web"),
        labels=our_labels(project_name, "web"),
    )

    assert engine.wait_ready(container_id, HTTP_CHECK, timeout_s=HTTP_CHECK.max_wait_s()) is None
    observed = engine.observe(project_name)
    (web,) = containers_of(observed, project_name)
    assert (web.id, web.state, web.health) == (container_id, "running", "healthy")
    network = next(n for n in observed.networks if n.name == f"{project_name}_default")
    assert network.labels[lbl.PROJECT] == project_name
    assert network.labels[lbl.NETWORK] == "default"

    attrs = docker_client.api.inspect_container(container_id)
    (binding,) = attrs["NetworkSettings"]["Ports"]["80/tcp"]
    assert binding["HostIp"] == "127.0.0.1"
    assert http_get(binding["HostPort"]).strip() == b"v1"
    aliases = attrs["NetworkSettings"]["Networks"][f"{project_name}_default"]["Aliases"]
    assert {"web", "www"} <= set(aliases)
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert attrs["Config"]["StopTimeout"] == 1
    assert attrs["Config"]["Healthcheck"]["Interval"] == 1_000_000_000


def test_a_container_that_exits_is_not_ready_and_says_why(
    engine: DockerEngine, project_name: str, busybox_image: str
) -> None:
    service = ServiceSpec(
        name="crash", image=busybox_image, command=("sh", "-c", "echo boom: no config >&2; exit 3")
    )
    container_id = engine.run_container(
        service,
        name=lbl.container_name(project_name, "crash"),
        labels=our_labels(project_name, "crash"),
    )

    reason = engine.wait_ready(container_id, None, timeout_s=20)

    assert reason is not None
    assert reason.startswith("exited with code 3")
    assert "boom: no config" in reason


def test_a_failed_run_leaves_no_half_made_container(
    engine: DockerEngine, project_name: str, busybox_image: str
) -> None:
    engine.create_network(network_spec(project_name), project=project_name)
    service = ServiceSpec(
        name="web",
        image=busybox_image,
        command=("sleep", "300"),
        networks=(
            ServiceNetwork(name=f"{project_name}_default"),
            ServiceNetwork(name=f"{project_name}_absent"),
        ),
    )

    with pytest.raises(EngineError, match=rf"service web: .*{project_name}_absent"):
        engine.run_container(
            service,
            name=lbl.container_name(project_name, "web"),
            labels=our_labels(project_name, "web"),
        )

    assert containers_of(engine.observe(project_name), project_name) == []


def test_a_recreate_through_apply_keeps_the_named_volume(
    engine: DockerEngine, docker_client: docker.DockerClient, project_name: str, busybox_image: str
) -> None:
    old = deploy_v1(engine, project_name, busybox_image)
    v2 = web_service(project_name, busybox_image, version="v2")

    changes = apply(
        Plan(actions=(RecreateService(v2, config_hash="h2", old=old, reason="changed"),)),
        engine,
        project=project_name,
        commit=COMMIT_2,
    )

    assert changes.failures == ()
    (new,) = containers_of(engine.observe(project_name), project_name)
    assert new.id != old.id
    assert new.name == f"{project_name}-web-1"
    assert (new.commit, new.config_hash, new.health) == (COMMIT_2, "h2", "healthy")
    container = docker_client.containers.get(new.id)
    assert container.exec_run(["cat", "/data/www/first"]).output.strip() == b"v1"
    assert container.exec_run(["cat", "/data/www/version"]).output.strip() == b"v2"


def test_an_unhealthy_recreate_rolls_back_to_the_old_container(
    engine: DockerEngine, project_name: str, busybox_image: str
) -> None:
    old = deploy_v1(engine, project_name, busybox_image)
    failing = HealthCheck(test=("CMD-SHELL", "exit 1"), interval_s=1, timeout_s=1, retries=1)
    v2 = web_service(project_name, busybox_image, version="v2", healthcheck=failing)

    with pytest.raises(ApplyError) as caught:
        apply(
            Plan(actions=(RecreateService(v2, config_hash="h2", old=old, reason="changed"),)),
            engine,
            project=project_name,
            commit=COMMIT_2,
        )

    assert caught.value.message.startswith("service web: new version not healthy (unhealthy")
    assert f"rolled back to the previous container (commit {COMMIT_1[:12]})" in str(caught.value)
    (back,) = containers_of(engine.observe(project_name), project_name)
    assert (back.id, back.name, back.state) == (old.id, old.name, "running")
    assert back.labels == old.labels
    assert back.commit == COMMIT_1


def test_a_missing_image_is_unavailable_with_a_fix_and_nothing_is_created(
    engine: DockerEngine, project_name: str
) -> None:
    image = f"reconciler-test/absent-{project_name}:1"
    service = ServiceSpec(name="db", image=image, networks=(ServiceNetwork(name="x"),))

    with pytest.raises(ImageUnavailable) as caught:
        engine.ensure_image(service)
    message = str(caught.value)
    assert message.startswith(f"service db: image {image} is not present locally")
    assert "cannot be pulled" in message
    # No stand-in of images/local/ for it: the hint does not send the user to one.
    assert "docker load" in message
    assert "build-base-images.sh" not in message

    never = service.model_copy(update={"pull_policy": "never"})
    with pytest.raises(ImageUnavailable, match="pull_policy is never"):
        engine.ensure_image(never)

    plan = Plan(
        actions=(
            CreateNetwork(network_spec(project_name), reason="missing"),
            CreateService(service, config_hash="h", reason="missing"),
        )
    )
    with pytest.raises(ApplyError) as applied:
        apply(plan, engine, project=project_name, commit=COMMIT_1)
    assert applied.value.done == []
    observed = engine.observe(project_name)
    assert containers_of(observed, project_name) == []
    assert not [n for n in observed.networks if n.name.startswith(project_name)]


def test_a_build_is_labelled_with_its_context_hash_and_not_rebuilt_unchanged(
    engine: DockerEngine,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
    tmp_path: Path,
    request_paths: list[str],
) -> None:
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "Dockerfile").write_text(
        'ARG BASE=scratch\nFROM ${BASE}\nCOPY hello.txt /hello.txt\nCMD ["cat", "/hello.txt"]\n'
    )
    image = f"reconciler-test/{project_name}:built"

    def spec(context_hash: str) -> ServiceSpec:
        build = BuildSpec(
            context=str(tmp_path), args={"BASE": busybox_image}, context_hash=context_hash
        )
        return ServiceSpec(name="app", image=image, build=build)

    built: set[str] = set()
    try:
        lines: list[str] = []
        engine.ensure_image(spec("hash-1"), progress=lines.append)
        attrs = docker_client.api.inspect_image(image)
        built.add(attrs["Id"])
        assert attrs["Config"]["Labels"][CONTEXT_HASH_LABEL] == "hash-1"
        assert any("COPY hello.txt" in line for line in lines)

        request_paths.clear()
        again: list[str] = []
        engine.ensure_image(spec("hash-1"), progress=again.append)
        assert "/build" not in request_paths
        assert again == [f"image {image} is up to date (context hash-1)"]

        engine.ensure_image(spec("hash-2"))
        attrs = docker_client.api.inspect_image(image)
        built.add(attrs["Id"])
        assert "/build" in request_paths
        assert attrs["Config"]["Labels"][CONTEXT_HASH_LABEL] == "hash-2"
    finally:
        for image_id in built:
            docker_client.api.remove_image(image_id, force=True)


def test_a_failing_build_is_image_unavailable_with_the_builder_message(
    engine: DockerEngine, busybox_image: str, project_name: str, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo no luck && exit 3\n")
    build = BuildSpec(context=str(tmp_path), context_hash="h")
    service = ServiceSpec(name="app", image=f"reconciler-test/{project_name}:broken", build=build)

    with pytest.raises(ImageUnavailable) as caught:
        engine.ensure_image(service)

    message = str(caught.value)
    assert message.startswith(f"service app: building image reconciler-test/{project_name}")
    assert "returned a non-zero code: 3" in message


def test_a_bystander_is_never_touched(
    engine: DockerEngine, project_name: str, busybox_image: str, bystander: Any
) -> None:
    before = engine.observe(project_name)
    old = deploy_v1(engine, project_name, busybox_image)
    network = next(
        n for n in engine.observe(project_name).networks if n.name == f"{project_name}_default"
    )

    apply(
        Plan(
            actions=(
                RemoveContainer(old, reason="not in compose.yaml"),
                RemoveNetwork(network, reason="not in compose.yaml"),
            )
        ),
        engine,
        project=project_name,
        commit=COMMIT_2,
    )

    after = engine.observe(project_name)
    assert containers_of(after, project_name) == []
    assert [c for c in after.containers if c.id == bystander.id] == [
        c for c in before.containers if c.id == bystander.id
    ]
    assert f"{project_name}_data" in {v.name for v in after.volumes}  # data is never pruned


def test_an_unreachable_engine_is_unavailable_not_empty() -> None:
    engine = DockerEngine(base_url="unix:///nonexistent/docker.sock")
    with pytest.raises(Unavailable, match=r"Docker engine unavailable at unix:///nonexistent"):
        engine.observe("anything")


def test_an_anonymous_volume_is_kept_across_a_recreate_and_never_deleted(
    engine: DockerEngine, docker_client: docker.DockerClient, project_name: str, busybox_image: str
) -> None:
    def desired(version: str) -> DesiredState:
        web = ServiceSpec(
            name="web",
            image=busybox_image,
            command=("sh", "-c", "exec sleep 600"),
            environment={"VERSION": version},
            anonymous_volumes=(AnonymousVolume(target="/app/node_modules"),),
            networks=(ServiceNetwork(name=f"{project_name}_default"),),
            stop_grace_period_s=0,
        )
        return DesiredState(
            project=project_name,
            services={"web": web},
            networks={"default": network_spec(project_name)},
            volumes={},
        )

    def deploy(version: str, commit: str) -> ObservedContainer:
        state = desired(version)
        apply(
            plan_for(state, engine.observe(project_name)),
            engine,
            project=project_name,
            commit=commit,
        )
        (web,) = containers_of(engine.observe(project_name), project_name)
        return web

    def anonymous_volume(container_id: str) -> str:
        mounts = docker_client.api.inspect_container(container_id)["Mounts"]
        (mount,) = [m for m in mounts if m["Destination"] == "/app/node_modules"]
        assert mount["Type"] == "volume"
        assert re.fullmatch(r"[0-9a-f]{64}", mount["Name"])
        return str(mount["Name"])

    old = deploy("v1", COMMIT_1)
    volume = anonymous_volume(old.id)
    try:
        docker_client.containers.get(old.id).exec_run(
            ["sh", "-c", "echo kept > /app/node_modules/marker"]
        )

        new = deploy("v2", COMMIT_2)

        assert new.id != old.id
        assert new.commit == COMMIT_2
        assert anonymous_volume(new.id) == volume
        output = docker_client.containers.get(new.id).exec_run(["cat", "/app/node_modules/marker"])
        assert output.output.strip() == b"kept"
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(old.id)
        # A third pass has nothing to do; removing the service keeps the volume.
        assert plan_for(desired("v2"), engine.observe(project_name)).actions == ()
        engine.remove_container(new.id)
        assert docker_client.api.inspect_volume(volume)["Name"] == volume
    finally:
        remove_project(docker_client, project_name)
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_volume(volume, force=True)
