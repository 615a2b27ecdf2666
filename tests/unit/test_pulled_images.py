"""Pulled images through the pass, on the fake engine: recorded when pulled, collected later.

What ``images.json`` holds is written only by the code the pass uses
(``record_pulled``, ``collect_images``); tests read it, and corrupt it by hand
only to see a bad record rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.decide.image_gc import ObservedImage, PulledImage
from reconciler.deploy.collecting import IMAGES_FILE, collect_images, record_pulled
from reconciler.deploy.passes import Reconciler
from reconciler.model.desired import DesiredState
from reconciler.settings import load_settings
from tests.fixtures.fake_engine import FakeEngine
from tests.unit.test_passes import FakeSource, sha

COMPOSE = """\
services:
  web:
    image: {image}
"""


def image_id(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Reconciler, FakeSource, FakeEngine, Path]:
    state = tmp_path / "state"
    settings = load_settings(
        {
            "RECONCILER_REPO": "git://example.invalid/x",
            "RECONCILER_STATE_DIR": str(state),
            "RECONCILER_PROJECT": "shop",
            "RECONCILER_ENV_FILE": "/dev/null",
        }
    )
    source = FakeSource(tmp_path / "commits")
    engine = FakeEngine()
    for n in range(1, 6):
        engine.registry[f"reg/web:v{n}"] = image_id(n)
    return Reconciler(settings, source=source, engine=engine), source, engine, state


def deploy(reconciler: Reconciler, source: FakeSource, n: int) -> None:
    source.commit(sha(n), COMPOSE.format(image=f"reg/web:v{n}"))
    outcome = reconciler.sync()
    assert outcome.ok, outcome.message


def rejected(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The files named by each ``images.record_rejected`` event."""
    return [
        r.event_fields["file"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "images.record_rejected"
    ]


def pulled_records(state: Path) -> dict[str, dict[str, object]]:
    document = json.loads((state / IMAGES_FILE).read_text())
    return dict(document["shop"].get("@pulled", {}))


def test_old_pulls_go_previous_stays_and_the_users_image_is_untouched(
    setup: tuple[Reconciler, FakeSource, FakeEngine, Path],
) -> None:
    reconciler, source, engine, state = setup
    users = image_id(99)
    engine.other_images[users] = ObservedImage(id=users, tags=("theirs:1",))
    for n in (1, 2, 3):
        deploy(reconciler, source, n)
    assert set(engine.other_images) == {image_id(2), image_id(3), users}
    assert set(pulled_records(state)) == {image_id(2), image_id(3)}
    assert pulled_records(state)[image_id(3)] == {"service": "web", "references": ["reg/web:v3"]}


def test_an_image_present_before_the_pass_is_never_recorded(
    setup: tuple[Reconciler, FakeSource, FakeEngine, Path],
) -> None:
    reconciler, source, engine, state = setup
    engine.images.add("reg/web:v1")  # the user pulled it by hand
    engine.other_images[image_id(1)] = ObservedImage(id=image_id(1), tags=("reg/web:v1",))
    for n in (1, 2, 3):
        deploy(reconciler, source, n)
    assert image_id(1) in engine.other_images
    assert image_id(1) not in pulled_records(state)


def test_someone_tagging_a_pulled_image_keeps_it(
    setup: tuple[Reconciler, FakeSource, FakeEngine, Path],
) -> None:
    reconciler, source, engine, state = setup
    deploy(reconciler, source, 1)
    v1 = engine.other_images[image_id(1)]
    engine.other_images[v1.id] = ObservedImage(id=v1.id, tags=(*v1.tags, "keep:me"))
    for n in (2, 3):
        deploy(reconciler, source, n)
    assert engine.other_images[image_id(1)].tags == ("reg/web:v1", "keep:me")
    assert image_id(1) in pulled_records(state)  # still ours, kept while tagged


def test_a_no_op_pass_lists_once_and_pulls_nothing(
    setup: tuple[Reconciler, FakeSource, FakeEngine, Path],
) -> None:
    reconciler, source, engine, _state = setup
    deploy(reconciler, source, 1)
    engine.calls.clear()
    assert reconciler.sync().ok
    assert engine.call_names() == ["observe", "list_images"]


def test_a_pull_for_an_apply_that_fails_is_still_recorded(
    setup: tuple[Reconciler, FakeSource, FakeEngine, Path],
) -> None:
    reconciler, source, engine, state = setup
    deploy(reconciler, source, 1)
    engine.not_ready["web"] = "unhealthy"
    source.commit(sha(2), COMPOSE.format(image="reg/web:v2"))
    assert not reconciler.sync().ok
    assert image_id(2) in pulled_records(state)
    assert image_id(2) in engine.other_images  # a failed pass removes nothing


def test_a_vanished_pulled_image_is_forgotten(
    setup: tuple[Reconciler, FakeSource, FakeEngine, Path],
) -> None:
    reconciler, source, engine, state = setup
    for n in (1, 2):
        deploy(reconciler, source, n)
    engine.containers.clear()  # so nothing holds v1 ...
    del engine.other_images[image_id(1)]  # ... and it was removed by hand
    deploy(reconciler, source, 3)
    assert image_id(1) not in pulled_records(state)


@pytest.mark.parametrize(
    "bad",
    [
        {"sha256:abc": {"service": "web", "references": ["reg/web:v1"]}},
        {"reg/web:v1": {"service": "web", "references": ["reg/web:v1"]}},
        {image_id(1): {"service": "web"}},
        {image_id(1): {"service": "web", "references": []}},
        {image_id(1): "reg/web:v1"},
        ["sha256:" + "1" * 64],
    ],
    ids=["short id", "a tag", "no references", "empty references", "not a map", "a list"],
)
def test_a_bad_record_is_rejected_and_its_image_kept(
    tmp_path: Path, bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FakeEngine()
    engine.other_images[image_id(1)] = ObservedImage(id=image_id(1), tags=("reg/web:v1",))
    record_pulled(tmp_path, "shop", "web", PulledImage(image_id(2), "reg/web:v2", ("reg/web:v2",)))
    path = tmp_path / IMAGES_FILE
    document = json.loads(path.read_text())
    document["shop"]["@pulled"] = bad  # what a damaged or hand-edited file could hold
    path.write_text(json.dumps(document))

    desired = DesiredState(project="shop", services={}, networks={}, volumes={})
    collect_images(engine, desired=desired, state_dir=tmp_path)

    assert image_id(1) in engine.other_images
    assert not any(call[0] == "remove_image" for call in engine.calls)
    assert rejected(caplog) == [str(path)]


def test_a_state_file_of_the_wrong_shape_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / IMAGES_FILE).write_text("[]")
    record_pulled(tmp_path, "shop", "web", PulledImage(image_id(1), "reg/web:v1", ("reg/web:v1",)))
    assert rejected(caplog) == [str(tmp_path / IMAGES_FILE)]
