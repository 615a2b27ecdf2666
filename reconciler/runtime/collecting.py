"""The image-collection step of a pass: after a successful apply, remove old builds.

Runs last in a pass that succeeded (apply done, health gates passed, no
restore request failed); never after a failed, stalled or unavailable pass, so
a deploy that rolled back removes nothing. It observes again (containers and
the images built for the project), advances the per-service versions recorded
in ``images.json`` in the state folder, asks ``decide.image_gc`` what to
remove, and removes it without force. A refusal by the engine (in use, a child
image) keeps the image; an engine lost here is logged and left to the next
pass: collection is clean-up, it never fails a deploy.

Events: ``image.removed`` (image, tags, service, reason, size_bytes) per image
removed; ``image.kept_by_engine`` (image, reason) when the engine refused;
``images.collected`` (removed, size_bytes) once, when something was removed;
``images.collect_failed`` (error) when the step could not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler import labels as lbl
from reconciler.decide.image_gc import ServiceVersions, choose_removals, next_versions
from reconciler.errors import ReconcilerError
from reconciler.logs import event
from reconciler.model.desired import DesiredState
from reconciler.model.observed import Observed
from reconciler.ports import Engine
from reconciler.statefiles import StateError, atomic_write_json, read_json

IMAGES_FILE = "images.json"


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
    images = engine.list_images(project)
    running = {
        c.service: c.image_id
        for c in observed.containers
        if c.project == project
        and c.service is not None
        and not c.is_helper
        and c.image_id
        and c.name == lbl.container_name(project, c.service)
    }
    path = state_dir / IMAGES_FILE
    document = _read(path)
    recorded = {
        service: ServiceVersions(v.get("current"), v.get("previous"))
        for service, v in (document.get(project) or {}).items()
        if isinstance(v, dict)
    }
    versions = next_versions(recorded, running, images)
    if versions != recorded:
        document[project] = {
            s: {"current": v.current, "previous": v.previous} for s, v in versions.items()
        }
        atomic_write_json(path, document)
    decision = choose_removals(
        project=project,
        images=images,
        in_use={c.image_id for c in observed.containers if c.image_id},
        desired={s.image for s in desired.services.values()},
        versions=versions,
    )
    removed = 0
    freed = 0
    for removal in decision.removals:
        image = removal.image
        refused = engine.remove_image(image.id)
        if refused is not None:
            event("image.kept_by_engine", image=image.id, tags=list(image.tags), reason=refused)
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
    if not removed:
        return []
    event("images.collected", project=project, removed=removed, size_bytes=freed)
    return [f"removed {removed} unused image(s) built for {project} (up to {_mb(freed)})"]


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = read_json(path)
    except StateError:
        raw = None
    return raw if isinstance(raw, dict) else {}


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"
