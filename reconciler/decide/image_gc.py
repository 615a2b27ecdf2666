"""Image garbage collection, decided purely: which images a successful pass removes.

After a pass whose apply succeeded (health gates included), the pass lists the
images the reconciler built for the project (``labels.IMAGE_PROJECT``) and the
ones it recorded having pulled for it, the image every container uses, and the
versions it recorded per service; this module says which images to remove and
why. No I/O: the adapter lists and removes, the pass records and logs.

An image is kept when any container (of any project, running or stopped) uses
it, when the desired state names one of its tags, when it is the current or
the previous version of its service, or when it carries a tag the reconciler
did not give it (someone tagged it to keep it). Everything else the reconciler
built or pulled for the project is removed.

Pulled images carry no label of ours (the registry's image is what it is), so
their ownership is a record: ``record_pull`` notes an image that a pull
brought onto the engine, with the reference it was pulled as, only when no
other tag named it already (then it was someone's before, and stays theirs).
An image present before the pass (``docker pull`` by hand, a local build) is
never recorded, so never removed. Images neither labelled nor recorded are
never judged here.

The previous version is what a revert commit deploys without a rebuild (or a
pull, where no registry is reachable). A rollback inside a pass needs no
unused image: it restarts the old container, which holds its image.
"""

from __future__ import annotations

import re
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


# What a record may name: a full image id, never a tag or a prefix (a tag
# could name someone else's image by the time it is removed).
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class PulledImage:
    """What ``Engine.ensure_image`` reports when its pull brought a new image.

    ``tags``: every tag the image has right after the pull, ``reference``
    included; another one means the image was on the engine already.
    """

    image_id: str
    reference: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class PulledRecord:
    """An image the reconciler pulled for a service, and the references it pulled."""

    service: str
    references: tuple[str, ...]


def record_pull(
    records: Mapping[str, PulledRecord], pulled: PulledImage, *, service: str
) -> dict[str, PulledRecord]:
    """``records`` (image id -> record) with ``pulled`` noted, when it is ours.

    A pull is ours when the image carries no tag but the references we pulled
    it as; an image that another tag already named was not brought by us.
    """
    result = dict(records)
    if not IMAGE_ID.fullmatch(pulled.image_id):
        return result
    before = records.get(pulled.image_id)
    ours = {pulled.reference, *(before.references if before else ())}
    if not set(pulled.tags) <= ours:
        return result
    result[pulled.image_id] = PulledRecord(
        before.service if before else service, tuple(sorted(ours))
    )
    return result


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
    # A pulled image goes tag by tag (never by id, which a forced removal would
    # need when it has several); empty: by id, as for a build.
    by_tags: tuple[str, ...] = ()


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
    pulled: Mapping[str, PulledRecord] | None = None,
) -> dict[str, ServiceVersions]:
    """The versions to record after a successful pass.

    ``running``: service -> image id of its container now. A service whose
    image changed moves its recorded current to previous. A service seen for
    the first time (nothing recorded: a new service, or the first pass of a
    reconciler that did not record) takes as previous its newest other image
    (built, or pulled per ``pulled``), so an upgrade does not drop the version
    before. A service that no longer runs is forgotten, and its images go with
    the next collection.
    """
    pulled = pulled or {}
    result: dict[str, ServiceVersions] = {}
    for service, image_id in sorted(running.items()):
        before = recorded.get(service)
        if before is None:
            others = [i for i in images if _service_of(i, pulled) == service and i.id != image_id]
            newest = max(others, key=lambda i: (i.created, i.id), default=None)
            result[service] = ServiceVersions(image_id, newest.id if newest else None)
        elif before.current == image_id:
            result[service] = before
        else:
            result[service] = ServiceVersions(image_id, before.current)
    return result


def _service_of(image: ObservedImage, pulled: Mapping[str, PulledRecord]) -> str | None:
    record = pulled.get(image.id)
    return image.service if record is None else record.service


def choose_removals(
    *,
    project: str,
    images: Collection[ObservedImage],
    in_use: Collection[str],
    desired: Collection[str],
    versions: Mapping[str, ServiceVersions],
    pulled: Mapping[str, PulledRecord] | None = None,
) -> Decision:
    """Which of ``images`` to remove, each with its reason; and why the rest stay.

    ``in_use``: image ids of every container on the engine; ``desired``: the
    image references of the desired state (``service.image``); ``pulled``:
    image id -> what the reconciler recorded pulling for ``project``.
    """
    pulled = pulled or {}
    removals: list[Removal] = []
    kept: list[Kept] = []
    for image in sorted(images, key=lambda i: (_service_of(i, pulled) or "", -i.created, i.id)):
        record = pulled.get(image.id)
        if record is not None and image.project is None:
            service, ours, how = record.service, frozenset(record.references), "pulled"
        elif image.project == project and image.service is not None:
            service, ours, how = image.service, None, "built"
        else:
            continue  # not ours to judge (the adapter should not have listed it)
        reason = _why_kept(image, service, ours, in_use=in_use, desired=desired, versions=versions)
        if reason is not None:
            kept.append(Kept(image, reason))
            continue
        removals.append(
            Removal(
                image,
                service,
                f"{how} for service {service}; no container uses it and it is "
                "neither the current nor the previous version",
                by_tags=image.tags if how == "pulled" else (),
            )
        )
    return Decision(tuple(removals), tuple(kept))


def _why_kept(
    image: ObservedImage,
    service: str,
    ours: Collection[str] | None,
    *,
    in_use: Collection[str],
    desired: Collection[str],
    versions: Mapping[str, ServiceVersions],
) -> str | None:
    if image.id in in_use:
        return "a container uses it"
    if any(tag in desired for tag in image.tags):
        return "the desired state names it"
    version = versions.get(service)
    if version is not None and image.id == version.current:
        return f"the current version of service {service}"
    if version is not None and image.id == version.previous:
        return f"the previous version of service {service}, kept for rollback"
    if ours is None and len(image.tags) > 1:
        # The reconciler gives a build one tag; another is someone's wish to keep it.
        return f"tagged more than once ({', '.join(image.tags)})"
    theirs = [tag for tag in image.tags if ours is not None and tag not in ours]
    if theirs:
        # Likewise for a pulled image: a tag we did not pull is someone's.
        return f"tagged by someone else ({', '.join(theirs)})"
    return None
