"""The image-collection step of a pass: after a successful apply, remove old images.

Runs last in a pass that succeeded (apply done, health gates passed, no
restore request failed); never after a failed, stalled or unavailable pass, so
a deploy that rolled back removes nothing. It observes again (containers, the
images built for the project and those it recorded pulling), advances the
per-service versions recorded in ``images.json`` in the state folder, asks
``decide.image_gc`` what to remove, and removes it without force (a pulled
image by the tags it was pulled as). A refusal by the engine (in use, a child
image) keeps the image; an engine lost here is logged and left to the next
pass: collection is clean-up, it never fails a deploy.

``record_pulled`` is the apply's ``on_pulled``: it notes in ``images.json``,
the moment a pull brought an image, that the reconciler owns it. The file,
per project: ``{"<service>": {"current": id, "previous": id}, ...,
"@pulled": {"<image id>": {"service": name, "references": [ref, ...]}}}``
(``@`` starts no service name). A record that is not of that shape, or whose
id is not a full ``sha256:`` id, is rejected when read (logged, never used:
the image stays); an image that is gone is forgotten.

Events: ``image.removed`` (image, tags, service, reason, size_bytes) per image
removed; ``image.kept_by_engine`` (image, reason) when the engine refused;
``images.collected`` (removed, size_bytes) once, when something was removed;
``images.collect_failed`` (error) when the step could not run;
``image.pull_recorded`` (image, reference, service) and
``images.record_failed`` (error); ``images.record_rejected`` (file, record,
why) for a record read that cannot be trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.decide.image_gc import (
    IMAGE_ID,
    PulledImage,
    PulledRecord,
    ServiceVersions,
    choose_removals,
    next_versions,
    record_pull,
)
from reconciler.errors import ReconcilerError, StateError
from reconciler.logs import event
from reconciler.model.desired import DesiredState
from reconciler.model.observed import Observed
from reconciler.ports import ALREADY_GONE, Engine
from reconciler.state import names
from reconciler.state.files import atomic_write_json, read_json

IMAGES_FILE = names.IMAGES
PULLED_KEY = "@pulled"  # in a project's entry; no service name starts with "@"


def collect_images(
    engine: Engine,
    *,
    desired: DesiredState,
    state_dir: Path,
    observed: Observed | None = None,
) -> list[str]:
    """Remove what the reconciler built for the project and no longer needs.

    ``observed``: what the pass saw before an apply that changed nothing
    (saves a list call); None to observe again. Returns one line for the
    pass's changes when something was removed.
    """
    project = desired.project
    try:
        return _collect(
            engine, desired=desired, state_dir=state_dir, project=project, observed=observed
        )
    except (ReconcilerError, OSError) as exc:  # Unavailable, EngineError, StateError
        event("images.collect_failed", level=30, project=project, error=str(exc))
        return []


def _collect(
    engine: Engine,
    *,
    desired: DesiredState,
    state_dir: Path,
    project: str,
    observed: Observed | None,
) -> list[str]:
    observed = observed or engine.observe(project)
    path = state_dir / IMAGES_FILE
    document = _read(path)
    entry = document.get(project)
    entry = entry if isinstance(entry, dict) else {}
    pulled = _pulled_records(entry, path)
    images = engine.list_images(project, pulled=tuple(pulled))
    running = {
        c.service: c.image_id
        for c in observed.containers
        if c.project == project
        and c.service is not None
        and not c.is_helper
        and c.image_id
        and c.name == desired.container_of(c.service)
    }
    recorded = {
        service: ServiceVersions(v.get("current"), v.get("previous"))
        for service, v in entry.items()
        if service != PULLED_KEY and isinstance(v, dict)
    }
    # A pulled image that is gone (removed by hand, or by an earlier pass
    # that could not write) is forgotten.
    present = {i.id for i in images}
    pulled = {image_id: r for image_id, r in pulled.items() if image_id in present}
    versions = next_versions(recorded, running, images, pulled)
    decision = choose_removals(
        project=project,
        images=images,
        in_use={c.image_id for c in observed.containers if c.image_id},
        desired={s.image for s in desired.services.values()},
        versions=versions,
        pulled=pulled,
    )
    removed = 0
    freed = 0
    try:
        for removal in decision.removals:
            image = removal.image
            refused = engine.remove_image(image.id, by_tags=removal.by_tags)
            if refused is not None and refused != ALREADY_GONE:
                event("image.kept_by_engine", image=image.id, tags=list(image.tags), reason=refused)
                continue
            pulled.pop(image.id, None)  # removed, or gone already: forgotten
            if refused is not None:
                continue
            removed += 1
            freed += image.size
            event(
                "image.removed",
                project=project,
                image=image.id,
                tags=list(image.tags),
                service=removal.service,
                reason=removal.reason,
                size_bytes=image.size,
            )
    finally:
        # Even when the engine was lost part way: what went is forgotten.
        new_entry = _entry(versions, pulled)
        if new_entry != entry:
            document[project] = new_entry
            atomic_write_json(path, document)
    if not removed:
        return []
    event("images.collected", project=project, removed=removed, size_bytes=freed)
    return [f"removed {removed} unused image(s) of {project} (up to {_mb(freed)})"]


def record_pulled(state_dir: Path, project: str, service: str, image: PulledImage) -> None:
    """Note in ``images.json`` that a pull for ``service`` brought ``image``.

    Only an image no other tag named is recorded (``decide.image_gc.record_pull``).
    Never raises: an unwritable state folder leaves the image unrecorded, so
    kept, which is the safe side.
    """
    path = state_dir / IMAGES_FILE
    try:
        document = _read(path)
        entry = document.get(project)
        entry = entry if isinstance(entry, dict) else {}
        before = _pulled_records(entry, path)
        after = record_pull(before, image, service=service)
        if after == before:
            return
        entry[PULLED_KEY] = _pulled_json(after)
        document[project] = entry
        atomic_write_json(path, document)
    except (ReconcilerError, OSError) as exc:
        event("images.record_failed", level=30, project=project, error=str(exc))
        return
    event(
        "image.pull_recorded",
        project=project,
        image=image.image_id,
        reference=image.reference,
        service=service,
    )


def _pulled_records(entry: Mapping[str, Any], path: Path) -> dict[str, PulledRecord]:
    """The project's pulled-image records that can be trusted; the rest rejected."""
    raw = entry.get(PULLED_KEY)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        _reject(path, raw, "not a map of image ids")
        return {}
    records: dict[str, PulledRecord] = {}
    for image_id, record in raw.items():
        why = _invalid(image_id, record)
        if why is not None:
            _reject(path, {image_id: record}, why)
            continue
        records[image_id] = PulledRecord(record["service"], tuple(record["references"]))
    return records


def _invalid(image_id: object, record: object) -> str | None:
    if not isinstance(image_id, str) or not IMAGE_ID.fullmatch(image_id):
        return "not a full image id (sha256: and 64 hex digits)"
    if not isinstance(record, dict) or not isinstance(record.get("service"), str):
        return "no service named"
    references = record.get("references")
    if (
        not isinstance(references, list)
        or not references
        or not all(isinstance(r, str) and r for r in references)
    ):
        return "no list of references"
    return None


def _reject(path: Path, record: object, why: str) -> None:
    event(
        "images.record_rejected",
        level=40,
        file=str(path),
        record=repr(record)[:200],
        why=f"{why}; the image it names is kept, never removed",
    )


def _entry(
    versions: Mapping[str, ServiceVersions], pulled: Mapping[str, PulledRecord]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        s: {"current": v.current, "previous": v.previous} for s, v in versions.items()
    }
    if pulled:
        entry[PULLED_KEY] = _pulled_json(pulled)
    return entry


def _pulled_json(pulled: Mapping[str, PulledRecord]) -> dict[str, Any]:
    return {
        image_id: {"service": r.service, "references": list(r.references)}
        for image_id, r in sorted(pulled.items())
    }


def _read(path: Path) -> dict[str, Any]:
    """The document, or {} (a file that does not parse is set aside and logged
    by ``read_json``, which falls back to ``.prev``)."""
    try:
        raw = read_json(path)
    except StateError:
        raw = None
    if raw is not None and not isinstance(raw, dict):
        _reject(path, raw, "the file holds no map of projects")
        return {}
    return raw or {}


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"
