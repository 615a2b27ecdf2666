"""Image garbage collection decided without an engine: what goes, what stays, why."""

from __future__ import annotations

import pytest

from reconciler import labels as lbl
from reconciler.decide.image_gc import (
    ObservedImage,
    PulledImage,
    PulledRecord,
    ServiceVersions,
    choose_removals,
    next_versions,
    record_pull,
)

P = "shop"


def built(
    image_id: str,
    service: str = "web",
    *,
    created: int = 0,
    tags: tuple[str, ...] = (),
    project: str = P,
) -> ObservedImage:
    return ObservedImage(
        id=image_id,
        tags=tags or (f"{project}-{service}:{image_id}",),
        labels={lbl.IMAGE_PROJECT: project, lbl.IMAGE_SERVICE: service},
        created=created,
    )


def removed(images: list[ObservedImage], **kw: object) -> list[str]:
    args: dict[str, object] = {"in_use": (), "desired": (), "versions": {}, **kw}
    decision = choose_removals(project=P, images=images, **args)  # type: ignore[arg-type]
    return [r.image.id for r in decision.removals]


def test_keeps_current_and_previous_removes_older() -> None:
    images = [built("a", created=1), built("b", created=2), built("c", created=3)]
    versions = {"web": ServiceVersions(current="c", previous="b")}
    assert removed(images, in_use={"c"}, versions=versions) == ["a"]


def test_an_image_any_container_uses_is_kept() -> None:
    images = [built("a"), built("b")]
    assert removed(images, in_use={"a"}) == ["b"]


def test_an_image_the_desired_state_names_is_kept() -> None:
    images = [built("a", tags=("shop-web:next",)), built("b")]
    assert removed(images, desired={"shop-web:next"}) == ["b"]


def test_an_image_tagged_again_by_someone_is_kept() -> None:
    images = [built("a", tags=("shop-web:a", "mine:keep"))]
    assert removed(images) == []


def test_images_of_another_project_or_unlabelled_are_never_removed() -> None:
    other = built("x", project="blog")
    unlabelled = ObservedImage(id="y", tags=("reconciler-local/busybox:latest",))
    assert removed([other, unlabelled]) == []


def test_every_removal_says_why_and_every_keep_too() -> None:
    images = [built("a"), built("b")]
    decision = choose_removals(project=P, images=images, in_use={"b"}, desired=(), versions={})
    assert [r.service for r in decision.removals] == ["web"]
    assert "no container uses it" in decision.removals[0].reason
    assert [(k.image.id, k.reason) for k in decision.kept] == [("b", "a container uses it")]


def test_a_changed_image_moves_current_to_previous() -> None:
    recorded = {"web": ServiceVersions(current="b", previous="a")}
    assert next_versions(recorded, {"web": "c"}, []) == {"web": ServiceVersions("c", "b")}


def test_an_unchanged_image_keeps_the_record() -> None:
    recorded = {"web": ServiceVersions(current="b", previous="a")}
    assert next_versions(recorded, {"web": "b"}, []) == recorded


def test_a_failed_build_never_becomes_previous() -> None:
    # b runs; c was built, failed its health check and was rolled back (never
    # recorded); d deploys: previous is b, the one that ran, not c.
    recorded = {"web": ServiceVersions(current="b", previous="a")}
    images = [
        built("a", created=1),
        built("b", created=2),
        built("c", created=3),
        built("d", created=4),
    ]
    versions = next_versions(recorded, {"web": "d"}, images)
    assert versions == {"web": ServiceVersions("d", "b")}
    assert removed(images, in_use={"d"}, versions=versions) == ["c", "a"]


def test_first_record_takes_the_newest_other_image_as_previous() -> None:
    images = [built("a", created=1), built("b", created=2), built("c", created=3)]
    assert next_versions({}, {"web": "c"}, images) == {"web": ServiceVersions("c", "b")}


def test_a_service_that_no_longer_runs_is_forgotten() -> None:
    recorded = {"web": ServiceVersions("b", "a"), "old": ServiceVersions("x", "y")}
    assert set(next_versions(recorded, {"web": "b"}, [])) == {"web"}


# -- pulled images: ownership is a record, not a label ------------------------

A, B, C, D = (f"sha256:{c * 64}" for c in "abcd")


def pulled(image_id: str, *tags: str) -> ObservedImage:
    return ObservedImage(id=image_id, tags=tags)


def record(service: str = "web", *references: str) -> PulledRecord:
    return PulledRecord(service, references or ("reg/web:v1",))


# (case, images, pulled records, in_use, desired, versions, expected removals)
PULLED_CASES = [
    ("an old pull goes", [pulled(A, "reg/web:v1")], {A: record()}, (), (), {}, [A]),
    ("never recorded: never judged", [pulled(A, "reg/web:v1")], {}, (), (), {}, []),
    ("a container uses it", [pulled(A, "reg/web:v1")], {A: record()}, {A}, (), {}, []),
    (
        "the desired state names it",
        [pulled(A, "reg/web:v1")],
        {A: record()},
        (),
        {"reg/web:v1"},
        {},
        [],
    ),
    (
        "current and previous stay, older goes",
        [pulled(A, "reg/web:v1"), pulled(B, "reg/web:v2"), pulled(C, "reg/web:v3")],
        {
            A: record("web", "reg/web:v1"),
            B: record("web", "reg/web:v2"),
            C: record("web", "reg/web:v3"),
        },
        {C},
        {"reg/web:v3"},
        {"web": ServiceVersions(current=C, previous=B)},
        [A],
    ),
    (
        "someone tagged it to keep it",
        [pulled(A, "reg/web:v1", "mine:keep")],
        {A: record()},
        (),
        (),
        {},
        [],
    ),
    (
        "every tag ours (pulled as two references)",
        [pulled(A, "reg/web:v1", "reg/web:latest")],
        {A: record("web", "reg/web:v1", "reg/web:latest")},
        (),
        (),
        {},
        [A],
    ),
    (
        "its reference moved on: dangling, still ours",
        [pulled(A)],
        {A: record()},
        (),
        {"reg/web:v1"},
        {},
        [A],
    ),
    (
        "a record over one of our builds changes nothing",
        [built(A, tags=("shop-web:x",))],
        {A: record()},
        {A},
        (),
        {},
        [],
    ),
    (
        "a record over another project's build: not ours",
        [built(A, project="blog")],
        {A: record()},
        (),
        (),
        {},
        [],
    ),
]


@pytest.mark.parametrize(
    ("images", "records", "in_use", "desired", "versions", "expected"),
    [case[1:] for case in PULLED_CASES],
    ids=[case[0] for case in PULLED_CASES],
)
def test_pulled_images(
    images: list[ObservedImage],
    records: dict[str, PulledRecord],
    in_use: set[str],
    desired: set[str],
    versions: dict[str, ServiceVersions],
    expected: list[str],
) -> None:
    decision = choose_removals(
        project=P,
        images=images,
        in_use=in_use,
        desired=desired,
        versions=versions,
        pulled=records,
    )
    assert [r.image.id for r in decision.removals] == expected
    for removal in decision.removals:
        assert removal.reason.startswith("pulled for service web")
        assert removal.by_tags == removal.image.tags  # by its tags, never forced by id


def test_a_build_is_removed_by_id_a_pull_by_its_tags() -> None:
    images = [built("x"), pulled(A, "reg/web:v1")]
    decision = choose_removals(
        project=P, images=images, in_use=(), desired=(), versions={}, pulled={A: record()}
    )
    assert {r.image.id: r.by_tags for r in decision.removals} == {"x": (), A: ("reg/web:v1",)}


def test_first_record_of_a_pulled_service_takes_its_newest_other_pull_as_previous() -> None:
    images = [
        ObservedImage(id=A, tags=("reg/web:v1",), created=1),
        ObservedImage(id=B, tags=("reg/web:v2",), created=2),
        ObservedImage(id=C, tags=("reg/web:v3",), created=3),
    ]
    records = {i: record() for i in (A, B, C)}
    assert next_versions({}, {"web": C}, images, records) == {"web": ServiceVersions(C, B)}


# (case, records before, what the pull brought, records after)
RECORD_CASES = [
    ("a new image is recorded", {}, PulledImage(A, "r:1", ("r:1",)), {A: record("web", "r:1")}),
    (
        "an image another tag named already is not ours",
        {},
        PulledImage(A, "r:1", ("r:1", "mine:1")),
        {},
    ),
    (
        "pulled again as a second reference: both ours",
        {A: record("web", "r:1")},
        PulledImage(A, "r:latest", ("r:1", "r:latest")),
        {A: record("web", "r:1", "r:latest")},
    ),
    ("not an image id: never recorded", {}, PulledImage("sha256:abc", "r:1", ("r:1",)), {}),
    ("a tag is not an id", {}, PulledImage("r:1", "r:1", ("r:1",)), {}),
]


@pytest.mark.parametrize(
    ("before", "image", "after"),
    [case[1:] for case in RECORD_CASES],
    ids=[case[0] for case in RECORD_CASES],
)
def test_record_pull(
    before: dict[str, PulledRecord], image: PulledImage, after: dict[str, PulledRecord]
) -> None:
    assert record_pull(before, image, service="web") == after
