"""The DockerEngine's pure parts: status text parsing and spec-to-API conversions (no engine)."""

from __future__ import annotations

import pytest

from reconciler.adapters.docker_engine import (
    _healthcheck,
    _port_bindings,
    _restart_policy,
    anonymous_mounts,
    parse_status,
)
from reconciler.model.desired import HealthCheck, PortBinding, ServiceSpec


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Up 3 minutes (healthy)", ("healthy", None)),
        ("Up 5 seconds (health: starting)", ("starting", None)),
        ("Up 2 minutes (unhealthy)", ("unhealthy", None)),
        ("Up About a minute", (None, None)),
        ("Up 2 hours (Paused)", (None, None)),
        ("Exited (1) 2 minutes ago", (None, 1)),
        ("Exited (137) 5 seconds ago", (None, 137)),
        ("Restarting (2) 1 second ago", (None, 2)),
        ("Created", (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_status(status: str, expected: tuple[str | None, int | None]) -> None:
    assert parse_status(status) == expected


@pytest.mark.parametrize(
    ("restart", "expected"),
    [
        ("no", {"Name": "no"}),
        ("always", {"Name": "always"}),
        ("unless-stopped", {"Name": "unless-stopped"}),
        ("on-failure", {"Name": "on-failure"}),
        ("on-failure:3", {"Name": "on-failure", "MaximumRetryCount": 3}),
    ],
)
def test_restart_policy(restart: str, expected: dict[str, object]) -> None:
    assert _restart_policy(restart) == expected


def test_healthcheck_in_nanoseconds_and_none_disables() -> None:
    check = HealthCheck(
        test=("CMD", "true"), interval_s=1.5, timeout_s=2, retries=4, start_period_s=0.5
    )
    assert _healthcheck(check) == {
        "test": ["CMD", "true"],
        "interval": 1_500_000_000,
        "timeout": 2_000_000_000,
        "retries": 4,
        "start_period": 500_000_000,
    }
    assert _healthcheck(HealthCheck(test=("NONE",))) == {"test": ["NONE"]}
    assert _healthcheck(None) is None


def test_port_bindings_group_by_target_and_leave_random_ports_to_docker() -> None:
    ports = (
        PortBinding(target=80, published=8080, host_ip="127.0.0.1"),
        PortBinding(target=80, published=8081),
        PortBinding(target=53, protocol="udp"),
    )
    assert _port_bindings(ports) == {
        "80/tcp": [("127.0.0.1", 8080), ("", 8081)],
        "53/udp": [("", None)],
    }


OLD_ANON = "a" * 64
OLD_IMAGE_VOL = "b" * 64


def test_anonymous_mounts_take_over_the_old_containers_volumes_at_their_paths() -> None:
    service = ServiceSpec.model_validate(
        {
            "name": "web",
            "image": "web:2",
            "mounts": [{"type": "volume", "source": "shop_data", "target": "/data"}],
            "anonymous_volumes": [
                {"target": "/app/node_modules"},
                {"target": "/cache", "read_only": True},
            ],
        }
    )
    old_mounts = [
        {"Type": "volume", "Name": OLD_ANON, "Destination": "/app/node_modules/", "RW": True},
        # A named volume, or a bind, at an anonymous path is never taken over.
        {"Type": "volume", "Name": "shop_cache", "Destination": "/cache", "RW": True},
        {"Type": "bind", "Source": "/srv", "Destination": "/srv", "RW": True},
        # The image's VOLUME: taken over too (as Compose), unless a mount is there.
        {"Type": "volume", "Name": OLD_IMAGE_VOL, "Destination": "/var/lib/app", "RW": True},
        {"Type": "volume", "Name": "c" * 64, "Destination": "/data", "RW": True},
    ]

    mounts = anonymous_mounts(
        service, old_mounts=old_mounts, image_volumes={"/var/lib/app": {}, "/data": {}, "/x": {}}
    )

    assert [dict(m) for m in mounts] == [
        {"Target": "/app/node_modules", "Source": OLD_ANON, "Type": "volume", "ReadOnly": False},
        {"Target": "/cache", "Source": None, "Type": "volume", "ReadOnly": True},
        {"Target": "/var/lib/app", "Source": OLD_IMAGE_VOL, "Type": "volume", "ReadOnly": False},
    ]


def test_anonymous_mounts_of_a_new_container_are_fresh() -> None:
    service = ServiceSpec.model_validate(
        {"name": "web", "image": "web:2", "anonymous_volumes": [{"target": "/cache"}]}
    )
    mounts = anonymous_mounts(service, old_mounts=(), image_volumes={"/var/lib/app": {}})
    assert [dict(m) for m in mounts] == [
        {"Target": "/cache", "Source": None, "Type": "volume", "ReadOnly": False}
    ]


def test_runtime_keys_map_to_host_config_and_unset_ones_stay_the_engines_default() -> None:
    from docker.api.client import APIClient

    from reconciler.adapters.docker_engine import host_config_args
    from reconciler.model.desired import LogConfig, ServiceSpec, Ulimit

    api = APIClient(version="1.43")  # builds the request bodies only, never connects
    service = ServiceSpec(
        name="web",
        image="w",
        cap_add=("NET_ADMIN",),
        cap_drop=("ALL",),
        init=True,
        tmpfs=("/run:size=64m", "/tmp"),
        shm_size=64 * 1024**2,
        extra_hosts=("db.local:10.0.0.5", "v6:::1"),
        read_only=True,
        security_opt=("no-new-privileges:true",),
        ulimits=(Ulimit(name="nofile", soft=1024, hard=2048),),
        sysctls={"net.core.somaxconn": "1024"},
        logging=LogConfig(driver="json-file", options={"max-size": "10m", "max-file": "3"}),
        mem_limit=512 * 1024**2,
        mem_reservation=128 * 1024**2,
        cpus=1.5,
        pids_limit=100,
        network_mode="container:shop-db-1",
    )
    config = api.create_host_config(**host_config_args(service))
    assert config["CapAdd"] == ["NET_ADMIN"]
    assert config["CapDrop"] == ["ALL"]
    assert config["Init"] is True
    assert config["Tmpfs"] == {"/run": "size=64m", "/tmp": ""}
    assert config["ShmSize"] == 67108864
    assert config["ExtraHosts"] == ["db.local:10.0.0.5", "v6:::1"]
    assert config["ReadonlyRootfs"] is True
    assert config["SecurityOpt"] == ["no-new-privileges:true"]
    assert config["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert config["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert config["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }
    assert config["Memory"] == 536870912
    assert config["MemoryReservation"] == 134217728
    assert config["NanoCpus"] == 1_500_000_000
    assert config["PidsLimit"] == 100
    assert config["NetworkMode"] == "container:shop-db-1"

    plain = api.create_host_config(**host_config_args(ServiceSpec(name="web", image="w")))
    for key in ("CapAdd", "Init", "Tmpfs", "ShmSize", "ExtraHosts", "ReadonlyRootfs", "LogConfig"):
        assert key not in plain
    for key in ("Memory", "NanoCpus", "PidsLimit", "Ulimits", "Sysctls", "SecurityOpt"):
        assert key not in plain
    assert plain["NetworkMode"] == "default"


def test_exposed_ports_are_the_published_then_the_exposed_ones_each_once() -> None:
    from reconciler.adapters.docker_engine import _exposed_ports
    from reconciler.model.desired import ServiceSpec

    service = ServiceSpec(
        name="web",
        image="w",
        ports=(PortBinding(target=80, published=8080), PortBinding(target=53, protocol="udp")),
        expose=("80/tcp", "3000/tcp", "53/udp", "9000/sctp"),
    )
    assert _exposed_ports(service) == [80, (53, "udp"), 3000, (9000, "sctp")]
