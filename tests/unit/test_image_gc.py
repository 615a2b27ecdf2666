"""Image garbage collection decided without an engine: what goes, what stays, why."""

from __future__ import annotations

from reconciler import labels as lbl
from reconciler.decide.image_gc import (
    ObservedImage,
    ServiceVersions,
    choose_removals,
    next_versions,
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
