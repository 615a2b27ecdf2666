"""Image garbage collection, decided purely: which images a successful pass removes.

After a pass whose apply succeeded (health gates included), the pass lists the
images the reconciler built for the project (``labels.IMAGE_PROJECT``), the
image every container uses, and the versions it recorded per service; this
module says which images to remove and why. No I/O: the adapter lists and
removes, the pass records and logs.

An image is kept when any container (of any project, running or stopped) uses
it, when the desired state names one of its tags, when it is the current or
the previous version of its service, or when it carries a tag more than the
one the reconciler gave it (someone tagged it to keep it). Everything else the
reconciler built for the project is removed. Images without our labels are
never seen here: the adapter lists only ours.

The previous version is what a revert commit deploys without a rebuild (or a
pull, where no registry is reachable). A rollback inside a pass needs no
unused image: it restarts the old container, which holds its image.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from reconciler import labels as lbl


@dataclass(frozen=True)
class ObservedImage:
    id: str
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    created: int = 0  # seconds since the epoch
    size: int = 0  # bytes, layers shared with other images included

    @property
    def project(self) -> str | None:
        return self.labels.get(lbl.IMAGE_PROJECT)

    @property
    def service(self) -> str | None:
        return self.labels.get(lbl.IMAGE_SERVICE)


@dataclass(frozen=True)
class ServiceVersions:
    """The image a service runs now and the one it ran before (image ids)."""

    current: str | None = None
    previous: str | None = None


@dataclass(frozen=True)
class Removal:
    image: ObservedImage
    service: str
    reason: str


@dataclass(frozen=True)
class Kept:
    image: ObservedImage
    reason: str


@dataclass(frozen=True)
class Decision:
    removals: tuple[Removal, ...] = ()
    kept: tuple[Kept, ...] = ()


def next_versions(
    recorded: Mapping[str, ServiceVersions],
    running: Mapping[str, str],
    images: Collection[ObservedImage],
) -> dict[str, ServiceVersions]:
    """The versions to record after a successful pass.

    ``running``: service -> image id of its container now. A service whose
    image changed moves its recorded current to previous. A service seen for
    the first time (nothing recorded: a new service, or the first pass of a
    reconciler that did not record) takes as previous its newest other image,
    so an upgrade does not drop the version before. A service that no longer
    runs is forgotten, and its images go with the next collection.
    """
    result: dict[str, ServiceVersions] = {}
    for service, image_id in sorted(running.items()):
        before = recorded.get(service)
        if before is None:
            others = [i for i in images if i.service == service and i.id != image_id]
            newest = max(others, key=lambda i: (i.created, i.id), default=None)
            result[service] = ServiceVersions(image_id, newest.id if newest else None)
        elif before.current == image_id:
            result[service] = before
        else:
            result[service] = ServiceVersions(image_id, before.current)
    return result


def choose_removals(
    *,
    project: str,
    images: Collection[ObservedImage],
    in_use: Collection[str],
    desired: Collection[str],
    versions: Mapping[str, ServiceVersions],
) -> Decision:
    """Which of ``images`` to remove, each with its reason; and why the rest stay.

    ``in_use``: image ids of every container on the engine; ``desired``: the
    image references of the desired state (``service.image``).
    """
    removals: list[Removal] = []
    kept: list[Kept] = []
    for image in sorted(images, key=lambda i: (i.service or "", -i.created, i.id)):
        if image.project != project or image.service is None:
            continue  # not ours to judge (the adapter should not have listed it)
        reason = _why_kept(image, in_use=in_use, desired=desired, versions=versions)
        if reason is not None:
            kept.append(Kept(image, reason))
            continue
        removals.append(
            Removal(
                image,
                image.service,
                f"built for service {image.service}; no container uses it and it is "
                "neither the current nor the previous version",
            )
        )
    return Decision(tuple(removals), tuple(kept))


def _why_kept(
    image: ObservedImage,
    *,
    in_use: Collection[str],
    desired: Collection[str],
    versions: Mapping[str, ServiceVersions],
) -> str | None:
    if image.id in in_use:
        return "a container uses it"
    if any(tag in desired for tag in image.tags):
        return "the desired state names it"
    version = versions.get(image.service or "")
    if version is not None and image.id == version.current:
        return f"the current version of service {image.service}"
    if version is not None and image.id == version.previous:
        return f"the previous version of service {image.service}, kept for rollback"
    if len(image.tags) > 1:
        # The reconciler gives an image one tag; another is someone's wish to keep it.
        return f"tagged more than once ({', '.join(image.tags)})"
    return None
