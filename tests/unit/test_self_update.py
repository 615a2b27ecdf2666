"""Self-update: the pass never acts on its own container; a helper replaces it."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import labels
from reconciler.decide.actions import (
    CreateService,
    Plan,
    RecreateService,
    RemoveContainer,
    StartService,
)
from reconciler.deploy.self_update import (
    HELPER_ROLE,
    hand_over,
    helper_name,
    own_container_id,
    split_own_actions,
)
from reconciler.errors import ApplyError, ImageUnavailable
from reconciler.model.desired import FileGrant, Mount, ServiceSpec
from reconciler.model.observed import ObservedContainer
from tests.fixtures.fake_engine import FakeEngine

OWN = "a" * 64
OTHER = "b" * 64
MOUNTINFO = f"""\
812 790 0:52 / / rw,relatime master:300 - overlay overlay rw,lowerdir=/x
830 812 254:0 /var/lib/docker/containers/{OWN}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw
831 812 254:0 /var/lib/docker/containers/{OWN}/hostname /etc/hostname rw - ext4 /dev/vda rw
832 812 254:0 /var/lib/reconciler /var/lib/reconciler rw - ext4 /dev/vda rw
"""

SERVICE = ServiceSpec(
    name="reconciler",
    image="reconciler:new",
    environment={"RECONCILER_ENV_FILE": "/etc/reconciler/reconciler.env"},
    mounts=(
        Mount(type="bind", source="/var/run/docker.sock", target="/var/run/docker.sock"),
        Mount(type="bind", source="/var/lib/reconciler", target="/var/lib/reconciler"),
    ),
    secrets=(
        FileGrant(name="s3-key", target="/run/secrets/s3-key", content_hash="0" * 64, content=b"k"),
    ),
    restart="unless-stopped",
)


def container(container_id: str, service: str, *, state: str = "running") -> ObservedContainer:
    return ObservedContainer(
        id=container_id,
        name=f"site-{service}-1",
        labels={labels.PROJECT: "site", labels.SERVICE: service},
        state=state,
    )


def web() -> ServiceSpec:
    return ServiceSpec(name="web", image="web:2")


def test_own_container_id_is_read_from_the_files_docker_mounts(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)

    assert own_container_id(mountinfo, hostname="myhost") == OWN


def test_outside_a_container_there_is_no_own_id(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("25 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n")

    assert own_container_id(mountinfo, hostname="vm-1") is None
    assert own_container_id(tmp_path / "absent", hostname="vm-1") is None


def test_docker_default_hostname_is_the_fallback(tmp_path: Path) -> None:
    assert own_container_id(tmp_path / "absent", hostname=OWN[:12]) == OWN[:12]


def test_the_recreate_of_its_own_container_is_taken_out_of_the_plan() -> None:
    own = RecreateService(SERVICE, "h2", container(OWN, "reconciler"), "configuration changed")
    other = RecreateService(web(), "h3", container(OTHER, "web"), "configuration changed")
    plan = Plan(actions=(own, other))

    kept, mine = split_own_actions(plan, OWN)

    assert kept.actions == (other,)
    assert mine.replace == own
    assert mine.dropped == ()


def test_a_short_own_id_matches_the_full_id() -> None:
    own = RecreateService(SERVICE, "h2", container(OWN, "reconciler"), "image changed")

    kept, mine = split_own_actions(Plan(actions=(own,)), OWN[:12])

    assert kept.actions == ()
    assert mine.replace == own


def test_it_never_removes_or_starts_itself() -> None:
    remove = RemoveContainer(
        container(OWN, "reconciler"), "service 'reconciler' is no longer declared"
    )
    start = StartService(SERVICE, container(OWN, "reconciler"), "container is exited")
    create = CreateService(web(), "h1", "no container")

    kept, mine = split_own_actions(Plan(actions=(remove, start, create)), OWN)

    assert kept.actions == (create,)
    assert mine.replace is None
    assert len(mine.dropped) == 2
    assert "install.sh --uninstall" in mine.dropped[0]


def test_outside_a_container_the_plan_is_unchanged() -> None:
    plan = Plan(
        actions=(RecreateService(SERVICE, "h2", container(OWN, "reconciler"), "changed"),),
        conflicts=("x",),
    )

    kept, mine = split_own_actions(plan, None)

    assert kept == plan
    assert mine.replace is None


def recreate_own(engine: FakeEngine) -> RecreateService:
    old = engine.add_container(
        "site-reconciler-1", labels={labels.PROJECT: "site", labels.SERVICE: "reconciler"}
    )
    return RecreateService(SERVICE, "h2", old, "configuration changed (h1 -> h2)")


def test_hand_over_starts_a_helper_from_the_new_image_running_one_sync() -> None:
    engine = FakeEngine()
    replace = recreate_own(engine)

    line = hand_over(engine, replace, project="site")

    helper = engine.by_name(helper_name("site"))
    assert helper is not None
    assert helper.service is not None
    assert helper.image == "reconciler:new"
    assert helper.labels == {labels.PROJECT: "site", labels.HELPER: HELPER_ROLE}
    assert helper.service.entrypoint == ("reconciler",)
    # --here: the helper runs the new code itself, never asks the daemon it replaces.
    assert helper.service.command == ("sync", "--here")
    assert helper.service.mounts == SERVICE.mounts
    assert helper.service.environment == SERVICE.environment
    assert helper.service.secrets == SERVICE.secrets
    assert helper.service.ports == ()
    assert helper.service.restart == "no"
    assert "handed over" in line
    # The old container is left to the helper's pass: not stopped, not renamed.
    assert engine.by_name("site-reconciler-1") is not None
    assert engine.call_names().index("ensure_image") < engine.call_names().index("run_container")
    assert "stop_container" not in engine.call_names()


def test_an_exited_helper_of_an_earlier_hand_over_is_replaced() -> None:
    engine = FakeEngine()
    replace = recreate_own(engine)
    earlier = engine.add_container(
        helper_name("site"),
        labels={labels.PROJECT: "site", labels.HELPER: HELPER_ROLE},
        state="exited",
    )

    hand_over(engine, replace, project="site")

    assert ("remove_container", earlier.id) in engine.calls
    assert engine.by_name(helper_name("site")) is not None


def test_a_running_helper_is_left_to_finish() -> None:
    engine = FakeEngine()
    replace = recreate_own(engine)
    engine.add_container(
        helper_name("site"), labels={labels.PROJECT: "site", labels.HELPER: HELPER_ROLE}
    )

    line = hand_over(engine, replace, project="site")

    assert "already in progress" in line
    assert "run_container" not in engine.call_names()


def test_a_new_image_that_cannot_be_had_starts_nothing_and_says_so() -> None:
    engine = FakeEngine()
    replace = recreate_own(engine)
    engine.missing_images.add("reconciler:new")

    with pytest.raises(ApplyError) as caught:
        hand_over(engine, replace, project="site", done=["create service web"])

    assert isinstance(caught.value.__cause__, ImageUnavailable)
    assert caught.value.done == ["create service web"]
    assert "self-update of reconciler" in str(caught.value)
    assert "run_container" not in engine.call_names()
