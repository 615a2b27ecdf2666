"""Planning as tables: each cases/plan/*.yaml has desired, observed and the expected plan.

In a case, a container's ``hash: current`` stands for the config hash of the
desired service of the same name, ``hash: stale`` for any other value (a
container made by a reconciler that stored no parts label); ``was: {spec}``
for a container made from that spec, with its hash and parts labels;
``image`` and ``image_id`` as Docker's container list gives them (the image
ID in both once the reference names another image).
``reasons`` maps an action's index to text its line must hold, ``never_said``
to words it must not (values of variables).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import labels
from reconciler.decide.actions import describe, summarize
from reconciler.decide.hashing import config_hash, config_parts, encode_parts
from reconciler.decide.planning import dependency_order, plan
from reconciler.model.desired import DesiredState, HealthCheck, Mount, PortBinding, ServiceSpec
from reconciler.model.observed import (
    Observed,
    ObservedContainer,
    ObservedNetwork,
    ObservedVolume,
)

CASES = sorted((Path(__file__).parent / "cases" / "plan").glob("*.yaml"))


def build_desired(raw: dict[str, Any]) -> DesiredState:
    project = raw["project"]
    services = {
        name: {"name": name, **(spec or {})} for name, spec in (raw.get("services") or {}).items()
    }
    networks = {
        key: {"key": key, "name": labels.network_name(project, key), **(spec or {})}
        for key, spec in (raw.get("networks") or {}).items()
    }
    volumes = {
        key: {"key": key, "name": labels.volume_name(project, key), **(spec or {})}
        for key, spec in (raw.get("volumes") or {}).items()
    }
    return DesiredState.model_validate(
        {"project": project, "services": services, "networks": networks, "volumes": volumes}
    )


def build_observed(raw: dict[str, Any], desired: DesiredState) -> Observed:
    containers = []
    for index, c in enumerate(raw.get("containers") or []):
        container_labels: dict[str, str] = dict(c.get("labels") or {})
        if c.get("project", desired.project if "service" in c else None):
            container_labels[labels.PROJECT] = c.get("project", desired.project)
        if "service" in c:
            container_labels[labels.SERVICE] = c["service"]
        hash_value = c.get("hash")
        if hash_value == "current":
            hash_value = config_hash(desired.services[c["service"]])
        if "was" in c:
            # Made from this spec by a reconciler that stores the parts label.
            was = ServiceSpec.model_validate({"name": c["service"], **c["was"]})
            hash_value = config_hash(was)
            container_labels[labels.CONFIG_PARTS] = encode_parts(config_parts(was))
        if hash_value is not None:
            container_labels[labels.CONFIG_HASH] = hash_value
        containers.append(
            ObservedContainer(
                id=f"id{index:062d}",
                name=c["name"],
                labels=container_labels,
                state=c.get("state", "running"),
                exit_code=c.get("exit_code"),
                image=c.get("image", ""),
                image_id=c.get("image_id", ""),
            )
        )
    networks = [
        ObservedNetwork(
            id=f"net{i}",
            name=n["name"],
            labels={labels.PROJECT: n["project"]} if n.get("project") else {},
        )
        for i, n in enumerate(raw.get("networks") or [])
    ]
    volumes = [
        ObservedVolume(
            name=v["name"],
            labels={labels.PROJECT: v["project"]} if v.get("project") else {},
        )
        for v in raw.get("volumes") or []
    ]
    return Observed(tuple(containers), tuple(networks), tuple(volumes))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_plan_case(case: Path) -> None:
    raw = yaml.safe_load(case.read_text())
    desired = build_desired(raw["desired"])
    observed = build_observed(raw.get("observed") or {}, desired)

    result = plan(desired, observed)

    lines = [describe(a) for a in result.actions]
    assert [line.split(":", 1)[0] for line in lines] == raw.get("expect", []), lines
    for index, reason in (raw.get("reasons") or {}).items():
        assert reason in lines[index], lines[index]
    for index, words in (raw.get("never_said") or {}).items():
        for word in words:
            assert word not in lines[index], lines[index]
    expected_conflicts = raw.get("conflicts", [])
    assert len(result.conflicts) == len(expected_conflicts), result.conflicts
    for wanted, got in zip(expected_conflicts, result.conflicts, strict=True):
        assert wanted in got


def test_plan_after_apply_is_empty() -> None:
    """Idempotence: once observed matches desired, there is nothing to do."""
    desired = build_desired(
        {
            "project": "shop",
            "services": {"db": {"image": "m"}, "web": {"image": "w"}},
            "networks": {"default": None},
            "volumes": {"data": None},
        }
    )
    observed = build_observed(
        {
            "containers": [
                {"name": "shop-db-1", "service": "db", "hash": "current"},
                {"name": "shop-web-1", "service": "web", "hash": "current"},
            ],
            "networks": [{"name": "shop_default", "project": "shop"}],
            "volumes": [{"name": "shop_data", "project": "shop"}],
        },
        desired,
    )
    assert plan(desired, observed).empty


def test_hash_is_stable_and_sensitive() -> None:
    a = ServiceSpec(name="web", image="w", environment={"A": "1", "B": "2"})
    b = ServiceSpec(name="web", image="w", environment={"B": "2", "A": "1"})
    c = ServiceSpec(name="web", image="w", environment={"A": "1", "B": "3"})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    # A known digest: changing it recreates every container of every user.
    assert config_hash(a) == config_hash(ServiceSpec.model_validate(a.model_dump()))


def test_a_service_hashes_as_it_did_when_the_hash_was_versioned() -> None:
    """A digest containers carry today. A new ServiceSpec field at its default
    must leave it alone: otherwise an upgrade recreates every running service."""
    web = ServiceSpec(
        name="web",
        image="w",
        environment={"A": "1"},
        ports=(PortBinding(target=80, published=8080),),
        mounts=(Mount(type="volume", source="shop_data", target="/data"),),
        restart="always",
        healthcheck=HealthCheck(test=("CMD", "true")),
    )
    assert config_hash(web) == "dab66d19ba8be3fa78325edeedda81fca27a92f329b4308d8f6c9e08c3f1d5bd"


def test_hash_ignores_which_checkout_holds_the_same_repository_files() -> None:
    def web(checkout: str, content: str) -> ServiceSpec:
        return ServiceSpec.model_validate(
            {
                "name": "web",
                "image": "w",
                "build": {"context": f"/state/{checkout}/app", "context_hash": content},
                "mounts": [
                    {
                        "type": "bind",
                        "source": f"/state/{checkout}/conf",
                        "target": "/etc/app",
                        "content_hash": content,
                    },
                    {"type": "bind", "source": "/etc/localtime", "target": "/etc/localtime"},
                ],
            }
        )

    assert config_hash(web("aaa", "h1")) == config_hash(web("bbb", "h1"))
    assert config_hash(web("aaa", "h1")) != config_hash(web("aaa", "h2"))


def test_dependency_order_keeps_file_order_between_independent_services() -> None:
    services = [
        ServiceSpec.model_validate(
            {"name": "web", "image": "w", "depends_on": [{"service": "db"}]}
        ),
        ServiceSpec(name="cache", image="c"),
        ServiceSpec(name="db", image="d"),
    ]
    assert dependency_order(services) == ["cache", "db", "web"]


def test_dependency_cycle_is_a_bug() -> None:
    services = [
        ServiceSpec.model_validate({"name": "a", "image": "x", "depends_on": [{"service": "b"}]}),
        ServiceSpec.model_validate({"name": "b", "image": "x", "depends_on": [{"service": "a"}]}),
    ]
    with pytest.raises(ValueError, match="cycle"):
        dependency_order(services)


def test_the_summary_drops_reasons_then_names_to_fit() -> None:
    desired = build_desired(
        {"project": "shop", "services": {"db": {"image": "m:2"}, "web": {"image": "w:2"}}}
    )
    observed = build_observed(
        {
            "containers": [
                {"name": "shop-db-1", "service": "db", "was": {"image": "m:1"}},
                {"name": "shop-web-1", "service": "web", "hash": "stale"},
            ]
        },
        desired,
    )
    result = plan(desired, observed)
    assert summarize(result) == "2 to recreate: db (image), web (configuration)"
    assert summarize(result, limit=30) == "2 to recreate: db, web"
    assert summarize(result, limit=14) == "2 to recreate"
    assert summarize(result, limit=10) == "2 to re..."
    assert summarize(plan(desired, build_observed({}, desired))) == "2 to create: db, web"
