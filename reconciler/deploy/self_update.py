"""Self-update: the reconciler replaces its own container without cutting a pass short.

The reconciler is a service of its own desired state (``desired-state/compose.yaml``),
so a commit may change its image or settings. It cannot apply that change
itself: stopping its own container would kill the pass half way, maybe in the
middle of a restore, and nothing would be left to start the new version.

The hand-over, in two steps of the pass (see ``docs/operations.md``):

1. ``split_own_actions``: before apply, the actions on the container the
   reconciler runs in are taken out of the plan; the rest of the pass (every
   other service, restore requests) is applied as usual and its status written.
2. ``hand_over``: at the end of the pass, a short-lived helper container is
   started from the *new* image with the new service's mounts and environment
   (the Docker socket, the state dir, the env file). It runs one ordinary
   ``reconciler sync``. That pass waits for the pass lock (so the old daemon has
   finished and written its status), then recreates the reconciler service
   like any other: the old container is stopped (it exits cleanly on SIGTERM
   between passes), the new one is created on the same state dir, and if it
   does not turn healthy the old one is put back and started again.

The helper runs the new code, so the configuration hash it labels the new
container with is the one the new daemon computes: no second hand-over.
Helpers carry the ``dev.reconciler.helper`` label, so no pass mistakes one for
a service; the next hand-over removes the previous, exited one.

``install.sh`` uses the same mechanism for the first deploy: a helper runs
``reconciler sync``, which creates the daemon's container from the desired state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler import labels
from reconciler.decide.actions import (
    Action,
    Plan,
    RecreateService,
    RemoveContainer,
    StartService,
)
from reconciler.errors import ApplyError
from reconciler.model.desired import HealthCheck, ServiceSpec
from reconciler.ports import Engine

HELPER_ROLE = "self-update"
# Docker bind-mounts these three files of /var/lib/docker/containers/<id>/
# into every container: the id of the container a process runs in.
_CONTAINER_FILE = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)\s")


def own_container_id(
    mountinfo: Path = Path("/proc/self/mountinfo"), *, hostname: str | None = None
) -> str | None:
    """The id (or, failing that, the 12-character prefix) of our container; None outside one."""
    try:
        text = mountinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    match = _CONTAINER_FILE.search(text)
    if match:
        return match.group(1)
    # Docker's default hostname is the short id; a service with `hostname:` set
    # and no readable mountinfo is not recognised, and is then never deferred.
    name = os.environ.get("HOSTNAME", "") if hostname is None else hostname
    return name if re.fullmatch(r"[0-9a-f]{12}", name) else None


def helper_name(project: str) -> str:
    return f"{project}-reconciler-self-update"


@dataclass(frozen=True)
class OwnActions:
    """What a pass must not do to its own container, and what to do instead."""

    # The change to hand over to a helper (the new image or settings), if any.
    replace: RecreateService | None = None
    # Actions dropped without a hand-over, each with why (for the pass's log).
    dropped: tuple[str, ...] = ()


def _is_own(container_id: str, own_id: str) -> bool:
    return container_id == own_id or (len(own_id) == 12 and container_id.startswith(own_id))


def split_own_actions(plan: Plan, own_id: str | None) -> tuple[Plan, OwnActions]:
    """``plan`` without the actions on the container ``own_id``; those, kept apart.

    Pure. Outside a container (``own_id`` None: ``reconciler sync`` on the host,
    or a helper, whose container is no service) the plan is returned unchanged.
    """
    if own_id is None:
        return plan, OwnActions()
    kept: list[Action] = []
    replace: RecreateService | None = None
    dropped: list[str] = []
    for action in plan.actions:
        match action:
            case RecreateService(old=old) if _is_own(old.id, own_id):
                replace = action
            case RemoveContainer(container=c) if _is_own(c.id, own_id):
                # Removing itself would end all reconciling; only a person
                # should do that (install.sh --uninstall).
                dropped.append(
                    f"not removing {c.name}: it is this reconciler ({action.reason}); "
                    "declare the reconciler service again, or remove it with "
                    "`sh install.sh --uninstall`"
                )
            case StartService(container=c) if _is_own(c.id, own_id):
                dropped.append(f"not starting {c.name}: it is this reconciler, running")
            case _:
                kept.append(action)
    return Plan(actions=tuple(kept), conflicts=plan.conflicts), OwnActions(
        replace=replace, dropped=tuple(dropped)
    )


def helper_spec(service: ServiceSpec) -> ServiceSpec:
    """The helper: the new image and settings running one ``reconciler sync``.

    Same mounts, environment, secrets and configs as the new service (the
    Docker socket, the state dir at its own path, the env file), so its pass
    reads the same settings and state as the daemon it replaces. No ports (two containers
    cannot publish the same), no restart, no health check, the default network.
    """
    return ServiceSpec(
        name=f"{service.name}-self-update",
        image=service.image,
        pull_policy="never",
        entrypoint=("reconciler",),
        # --here: the pass is the helper's own, never asked of the daemon it replaces.
        command=("sync", "--here"),
        environment=dict(service.environment),
        mounts=service.mounts,
        # Its secrets and configs too: settings may be read from them.
        secrets=service.secrets,
        configs=service.configs,
        healthcheck=HealthCheck(test=("NONE",)),
        restart="no",
        labels=dict(service.labels),
        user=service.user,
        working_dir=service.working_dir,
    )


def hand_over(
    engine: Engine, replace: RecreateService, *, project: str, done: Sequence[str] = ()
) -> str:
    """Start the helper that replaces our container; return a line for the pass's changes.

    The image is made present first (a pull or a build of the new version): if
    it cannot be had, nothing is started. Errors are raised as ``ApplyError``
    carrying ``done`` (what the pass changed before), with the engine's error as
    the cause, so the pass classifies them like any apply error. A helper still
    running from an earlier hand-over is left alone (its pass sees this commit).
    """
    service = replace.service
    name = helper_name(project)
    try:
        for container in engine.observe(project).containers:
            if container.name != name:
                continue
            if container.state in {"running", "restarting"}:
                return f"self-update of {service.name} already in progress ({name})"
            engine.remove_container(container.id)
        engine.ensure_image(service)
        engine.run_container(
            helper_spec(service),
            name=name,
            labels={labels.PROJECT: project, labels.HELPER: HELPER_ROLE},
        )
    except ApplyError as exc:
        raise ApplyError(f"self-update of {service.name}: {exc.message}", [*done, *exc.done]) from (
            exc.__cause__ or exc
        )
    except Exception as exc:
        raise ApplyError(f"self-update of {service.name}: {exc}", list(done)) from exc
    return (
        f"recreate service {service.name}: handed over to {name} "
        f"({replace.reason}; image {service.image})"
    )
