"""In swarm mode a backup or restore reaches volumes on this node only: a one-node
volume whose service runs elsewhere is refused, with what to write (pure)."""

from __future__ import annotations

from reconciler.decide.swarm_placement import services_to_ask, volumes_elsewhere
from reconciler.model.desired import DesiredState, Mount, ServiceSpec, VolumeSpec


def service(name: str, *volumes: str) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        image="busybox:1",
        mounts=tuple(Mount(type="volume", source=f"shop_{v}", target=f"/{v}") for v in volumes),
    )


def stack() -> DesiredState:
    return DesiredState(
        project="shop",
        engine_mode="swarm",
        services={
            "web": service("web", "uploads"),
            "worker": service("worker", "uploads"),
            "db": service("db", "db"),
            "files": service("files", "shared"),
        },
        networks={},
        volumes={
            "uploads": VolumeSpec(key="uploads", name="shop_uploads"),
            "db": VolumeSpec(key="db", name="shop_db"),
            "shared": VolumeSpec(
                key="shared",
                name="shop_shared",
                driver_opts={"type": "nfs", "o": "addr=10.0.0.5", "device": ":/export"},
            ),
        },
    )


def test_volumes_whose_services_run_here_or_nowhere_pass() -> None:
    assert volumes_elsewhere(stack(), ["uploads", "db"], here="vm1", task_hosts={}) == []
    assert volumes_elsewhere(stack(), ["db"], here="vm1", task_hosts={"web": {"vm2"}}) == []


def test_another_node_that_shares_this_ones_host_name_is_still_elsewhere() -> None:
    # task_hosts holds other nodes only (told apart by node id): a clone named vm1 too.
    (problem,) = volumes_elsewhere(stack(), ["uploads"], here="vm1", task_hosts={"web": {"vm1"}})
    assert problem.startswith("volume uploads: its data is on node vm1, where service web runs")


def test_a_volume_mounted_by_a_task_on_another_node_is_refused_with_the_fix() -> None:
    problems = volumes_elsewhere(
        stack(), ["uploads", "db"], here="vm1", task_hosts={"worker": {"vm2"}}
    )  # db runs here: this node is never in task_hosts
    assert problems == [
        "volume uploads: its data is on node vm2, where service worker runs, and backups and "
        "restores reach volumes on this node (vm1): pin worker here (deploy: placement: "
        "constraints: [node.hostname == vm1]) or keep uploads on shared storage (NFS)"
    ]


def test_a_volume_on_shared_storage_is_the_same_on_every_node() -> None:
    assert volumes_elsewhere(stack(), ["shared"], here="vm1", task_hosts={"files": {"vm2"}}) == []
    assert services_to_ask(stack(), ["shared"]) == []


def test_only_the_services_of_one_node_volumes_are_asked_about_once_each() -> None:
    assert services_to_ask(stack(), ["uploads", "db", "uploads", "shared"]) == [
        "web",
        "worker",
        "db",
    ]


def test_a_volume_plugin_keeps_its_data_off_the_node_and_an_external_volume_counts_as_local() -> (
    None
):
    assert not VolumeSpec(key="v", name="v", driver="rexray").on_one_node
    assert VolumeSpec(key="v", name="v", external=True).on_one_node
    assert VolumeSpec(key="v", name="v", driver_opts={"type": "tmpfs"}).on_one_node
