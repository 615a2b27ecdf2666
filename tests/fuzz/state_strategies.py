"""Hypothesis strategies for the planner: desired states, and engines a prior apply left behind.

``desired_states`` builds ``DesiredState`` values directly (the loader has its
own properties): services with images, environment, ports, volume mounts,
networks, acyclic ``depends_on``, health checks and restart policies.

``engines`` builds a ``FakeEngine`` holding what an apply of another random
desired state (of this project or of another one) would leave, then disturbs
it the way life does: foreign and unlabelled containers with our names,
stopped, paused and dead containers, stale or missing config hashes, several
containers for one service (an interrupted recreate), helper containers, and
networks or volumes with our names that we did not create.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from reconciler import labels as lbl
from reconciler.decide.planning import plan
from reconciler.deploy.applying import apply
from reconciler.model.desired import (
    Dependency,
    DesiredState,
    HealthCheck,
    Mount,
    NetworkSpec,
    PortBinding,
    ServiceNetwork,
    ServiceSpec,
    VolumeSpec,
)
from reconciler.model.observed import ObservedVolume
from tests.fixtures.fake_engine import FakeEngine

SERVICES = ["web", "db", "php", "job"]
VOLUMES = ["data", "site"]
NETWORKS = ["default", "front", "back"]
EXTERNAL_NETWORK = "traefik"
EXTERNAL_VOLUME = "shared-data"
_IMAGES = st.sampled_from(["img:1", "img:2", "mariadb:11.4"])


def _subset(draw: st.DrawFn, items: list[str]) -> list[str]:
    return draw(st.lists(st.sampled_from(items), unique=True)) if items else []


@st.composite
def desired_states(
    draw: st.DrawFn,
    *,
    project: str,
    images: st.SearchStrategy[str] = _IMAGES,
    command: tuple[str, ...] | None = None,
    externals: bool = True,
    published_ports: bool = True,
    grace_s: float = 10.0,
) -> DesiredState:
    volume_keys = draw(st.lists(st.sampled_from(VOLUMES), unique=True, max_size=2))
    volumes = {
        key: VolumeSpec(key=key, name=lbl.volume_name(project, key), labels=draw(_labels))
        for key in volume_keys
    }
    if externals and draw(st.booleans()):
        volumes["shared"] = VolumeSpec(key="shared", name=EXTERNAL_VOLUME, external=True)
    network_keys = draw(st.lists(st.sampled_from(NETWORKS), unique=True, max_size=3))
    networks = {
        key: NetworkSpec(
            key=key,
            name=lbl.network_name(project, key),
            internal=draw(st.booleans()),
            labels=draw(_labels),
        )
        for key in network_keys
    }
    if externals and draw(st.booleans()):
        networks["proxy"] = NetworkSpec(key="proxy", name=EXTERNAL_NETWORK, external=True)
    names = draw(st.lists(st.sampled_from(SERVICES), unique=True, min_size=1, max_size=4))
    free_ports = iter(range(18080, 18100))
    services: dict[str, ServiceSpec] = {}
    for index, name in enumerate(names):
        earlier = names[:index]
        depends = _subset(draw, earlier)
        ports: list[PortBinding] = []
        if draw(st.booleans()):
            published = next(free_ports) if published_ports and draw(st.booleans()) else None
            ports.append(PortBinding(target=80, published=published, host_ip="127.0.0.1"))
        mounts = tuple(
            Mount(type="volume", source=volumes[key].name, target=f"/mnt/{key}")
            for key in _subset(draw, sorted(volumes))
        )
        service_networks = tuple(
            ServiceNetwork(name=networks[key].name, aliases=(f"{name}-alias",))
            for key in _subset(draw, sorted(networks))
        )
        services[name] = ServiceSpec(
            name=name,
            image=draw(images),
            command=command,
            environment=draw(st.dictionaries(st.sampled_from(["A", "B"]), st.text(max_size=3))),
            ports=tuple(ports),
            mounts=mounts,
            networks=service_networks,
            depends_on=tuple(
                Dependency(
                    service=dep,
                    condition=draw(st.sampled_from(["service_started", "service_healthy"])),
                )
                for dep in depends
            ),
            healthcheck=draw(
                st.sampled_from(
                    [
                        None,
                        HealthCheck(test=("NONE",)),
                        HealthCheck(test=("CMD", "true"), interval_s=1.0, timeout_s=5.0),
                    ]
                )
            ),
            restart=draw(st.sampled_from(["no", "always", "unless-stopped"])),
            labels=draw(_labels),
            stop_grace_period_s=grace_s,
        )
    return DesiredState(project=project, services=services, networks=networks, volumes=volumes)


_labels = st.dictionaries(st.sampled_from(["team", "tier"]), st.sampled_from(["a", "b"]))


def applied(engine: FakeEngine, desired: DesiredState, *, commit: str) -> None:
    """What a successful sync of ``desired`` leaves on ``engine`` (nothing when it conflicts)."""
    result = plan(desired, engine.observe(desired.project))
    if not result.conflicts:
        apply(result, engine, project=desired.project, commit=commit)


def _names(project: str) -> list[str]:
    """Container names a disturbance may take: ours, another project's, an aside copy."""
    return [
        *(lbl.container_name(p, s) for p in (project, "other") for s in SERVICES),
        f"{lbl.container_name(project, 'web')}-old-0123456789ab",
        "unrelated",
    ]


@st.composite
def engines(draw: st.DrawFn, *, project: str) -> FakeEngine:
    engine = FakeEngine()
    prior_project = draw(st.sampled_from([project, project, "other"]))
    for round_ in range(draw(st.integers(0, 2))):
        prior = draw(desired_states(project=prior_project))
        applied(engine, prior, commit=f"c{round_}")
    for _ in range(draw(st.integers(0, 5))):
        _disturb(draw, engine, project)
    return engine


def _disturb(draw: st.DrawFn, engine: FakeEngine, project: str) -> None:
    kind = draw(
        st.sampled_from(
            ["foreign", "ours", "helper", "state", "hash", "network", "volume", "external"]
        )
    )
    taken = {c.name for c in engine.containers.values()}
    if kind in {"foreign", "ours", "helper"}:
        name = draw(st.sampled_from(_names(project)))
        if name in taken:
            return  # Docker refuses a second container with a name
        labels: dict[str, Any] = {}
        if kind == "ours":
            service = draw(st.sampled_from([*SERVICES, "gone"]))
            labels = {
                lbl.PROJECT: project,
                lbl.SERVICE: service,
                lbl.CONFIG_HASH: draw(st.sampled_from(["stale", ""])),
            }
        elif kind == "helper":
            labels = {lbl.PROJECT: project, lbl.HELPER: "backup"}
        elif draw(st.booleans()):
            labels = {lbl.PROJECT: "other", lbl.SERVICE: "web"}
        state = draw(st.sampled_from(["running", "exited", "created"]))
        engine.add_container(name, labels=labels, state=state)
    elif kind in {"state", "hash"} and engine.containers:
        container = engine.containers[draw(st.sampled_from(sorted(engine.containers)))]
        if kind == "state":
            container.state = draw(
                st.sampled_from(["exited", "created", "paused", "dead", "restarting", "running"])
            )
            exited = container.state in {"exited", "dead"}
            container.exit_code = draw(st.sampled_from([0, 1, 137])) if exited else None
        elif draw(st.booleans()):
            container.labels[lbl.CONFIG_HASH] = "stale"
        else:
            container.labels.pop(lbl.CONFIG_HASH, None)
    elif kind == "network":
        name = lbl.network_name(project, draw(st.sampled_from(NETWORKS)))
        if all(n.name != name for n in engine.networks.values()):
            engine.add_network(name, labels=draw(st.sampled_from([{}, {lbl.PROJECT: "other"}])))
        elif draw(st.booleans()):
            victim = next(n for n in engine.networks.values() if n.name == name)
            engine.networks.pop(victim.id)
    elif kind == "volume":
        name = lbl.volume_name(project, draw(st.sampled_from(VOLUMES)))
        if name not in engine.volumes:
            engine.volumes[name] = ObservedVolume(name=name, labels={})
    elif kind == "external":
        if all(n.name != EXTERNAL_NETWORK for n in engine.networks.values()):
            engine.add_network(EXTERNAL_NETWORK)
        engine.volumes.setdefault(EXTERNAL_VOLUME, ObservedVolume(name=EXTERNAL_VOLUME))


def show(engine: FakeEngine) -> str:
    """The engine's contents, for Hypothesis to print with a failing example."""
    lines = [
        f"container {c.name} {c.state} exit={c.exit_code} labels={c.labels}"
        for c in engine.containers.values()
    ]
    lines += [f"network {n.name} labels={n.labels}" for n in engine.networks.values()]
    lines += [f"volume {v.name} labels={v.labels}" for v in engine.volumes.values()]
    return "engine:\n  " + "\n  ".join(lines)
