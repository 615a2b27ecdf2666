"""One backup run: the lock, the policy's volumes and dumps, the status file, retention.

``run_backup`` takes the backup lock, picks an id free in the target, stops
the services a volume's policy asks to (with the pass lock held meanwhile),
has ``backup_writing.write_backup`` store the parts and the manifest, records
the result in the status file and then prunes (``stored_backups.prune``).
Two backups never run at once: ``backup_lock`` holds an fcntl lock on a file
in the state dir.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from reconciler.adapters import database_helper, engine_client, stack_control
from reconciler.adapters.engine_client import Client
from reconciler.backup import backup_status, restic_backups, stop_journal
from reconciler.backup.backup_target import BackupTarget
from reconciler.backup.backup_writing import DatabaseToDump, VolumeToRead, write_backup
from reconciler.backup.manifests import Manifest, ProgressCallback, backup_id, id_time
from reconciler.backup.stored_backups import prune
from reconciler.decide.retention import RetentionRules
from reconciler.errors import BackupBusy, BackupError, ReconcilerError, StoreError
from reconciler.logs import event
from reconciler.model.backup_policy import BackupPolicy
from reconciler.model.desired import DesiredState
from reconciler.state import names
from reconciler.state.files import PRIVATE_FILE_MODE, exclusive_lock, private_dir

LOCK_FILE = names.BACKUP_LOCK
PASS_LOCK = names.PASS_LOCK
PASS_LOCK_WAIT_S = 600.0


@dataclass(frozen=True)
class BackupResult:
    manifest: Manifest
    pruned: tuple[str, ...] = ()


@contextmanager
def backup_lock(state_dir: Path) -> Iterator[None]:
    """Hold the backup lock, or raise ``BackupBusy`` at once when another process has it.

    An fcntl lock dies with its process: a crashed backup never leaves a stale lock.
    """
    private_dir(state_dir)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise BackupBusy(
                f"another backup is running (pid {holder}, lock {path}); wait for it to finish"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def run_backup(
    *,
    client: Client,
    target: BackupTarget,
    desired: DesiredState,
    policy: BackupPolicy,
    state_dir: Path,
    commit: str | None = None,
    helper_image: str | None = None,
    progress: ProgressCallback | None = None,
    prune_after: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """One backup now: lock, stream every artifact, write the manifest, prune, record status.

    Raises ``BackupBusy`` when another backup runs, ``BackupError`` (or a
    ``StoreError``/``Unavailable``) when this one fails; the failure is
    recorded in the status file and logged before it is raised. Retention
    runs only after a successful backup.
    """
    with backup_lock(state_dir):
        started = clock()
        ident = backup_id(started)
        monotonic = time.monotonic()
        try:
            started = _free_start(target, clock, first=started)
            ident = backup_id(started)
            event("backup.start", id=ident, target=target.url, project=desired.project)
            # A backup killed mid-volume leaves its helper container; the lock is
            # held, so every "backup" helper of the project is such a leftover.
            stack_control.remove_leftovers(client, project=desired.project, purposes={"backup"})
            manifest = _backup(
                client=client,
                target=target,
                desired=desired,
                policy=policy,
                ident=ident,
                started=started,
                state_dir=state_dir,
                commit=commit,
                helper_image=helper_image,
                progress=progress,
                monotonic=monotonic,
            )
        except BaseException as exc:
            duration = time.monotonic() - monotonic
            message = str(exc) or type(exc).__name__
            backup_status.record(
                state_dir,
                backup_status.BackupStatus(
                    time=started.isoformat(),
                    result="failed",
                    id=ident,
                    target=target.url,
                    duration_s=round(duration, 3),
                    error=message,
                ),
            )
            event("backup.failed", level=logging.ERROR, id=ident, target=target.url, error=message)
            if isinstance(exc, ReconcilerError):
                raise
            if isinstance(exc, Exception):
                raise BackupError(f"backup {ident} failed: {message}") from exc
            raise
        backup_status.record(
            state_dir,
            backup_status.BackupStatus(
                time=started.isoformat(),
                result="ok",
                id=ident,
                target=target.url,
                size=manifest.size,
                duration_s=manifest.duration_s,
            ),
        )
        event(
            "backup.done",
            id=ident,
            target=target.url,
            size=manifest.size,
            artifacts=len(manifest.artifacts),
            duration_s=manifest.duration_s,
        )
        pruned: tuple[str, ...] = ()
        if prune_after:
            try:
                pruned = prune(target, _rules(policy), dry_run=False, now=clock()).delete
            except (StoreError, ReconcilerError) as exc:
                # The backup itself is good; a prune that fails is retried after the next one.
                event(
                    "backup.prune_failed", level=logging.WARNING, target=target.url, error=str(exc)
                )
        return BackupResult(manifest=manifest, pruned=pruned)


def _free_start(
    target: BackupTarget, clock: Callable[[], datetime], *, first: datetime
) -> datetime:
    """A start time whose id names nothing in the store yet.

    Ids have a resolution of one second: a backup right after another (a
    scheduled one just after a manual one), or after one killed in the same
    second, waits for the next second rather than failing. The backup lock is
    held, so no other backup of this state folder takes the id meanwhile.
    """
    started = first
    for attempt in range(5):
        if attempt:
            target.listing = None  # listed again after the wait
        taken = {b.id for b in restic_backups.stored_backups(target, id_time)}
        if backup_id(started) not in taken and not target.store.list(f"{backup_id(started)}/"):
            return started
        time.sleep(1.0 - started.microsecond / 1_000_000 + 0.01)
        started = clock()
    raise BackupError(
        f"a backup {backup_id(started)} already exists in {target.url} and the clock "
        "does not move on; check the machine's clock"
    )


def _rules(policy: BackupPolicy) -> RetentionRules:
    return RetentionRules(
        daily=policy.retention.daily,
        weekly=policy.retention.weekly,
        monthly=policy.retention.monthly,
    )


def external_dumps(
    client: Client, desired: DesiredState, policy: BackupPolicy
) -> list[DatabaseToDump]:
    """backup.yaml's external databases, each to be dumped through a helper of its own."""
    if not policy.external_databases:
        return []
    network = engine_client.own_network_mode(client)
    return [
        DatabaseToDump(
            entry.name,
            "",
            external=database_helper.external_target(entry, desired, own_network_mode=network),
        )
        for entry in policy.external_databases
    ]


def _backup(
    *,
    client: Client,
    target: BackupTarget,
    desired: DesiredState,
    policy: BackupPolicy,
    ident: str,
    started: datetime,
    state_dir: Path,
    commit: str | None,
    helper_image: str | None,
    progress: ProgressCallback | None,
    monotonic: float,
) -> Manifest:
    # Swarm mode: a volume whose service runs on another node is not read here,
    # where an old volume of the same name would pass for its data.
    elsewhere = stack_control.volumes_elsewhere(client, desired, [v.name for v in policy.volumes])
    if elsewhere:
        raise BackupError("; ".join(elsewhere) + " (nothing was stopped or read)")
    volumes = [
        VolumeToRead(
            key=volume.name,
            volume=desired.volumes[volume.name].name,
            hold=partial(
                _services_held_stopped,
                client,
                desired,
                desired.volumes[volume.name].name,
                state_dir,
            )
            if volume.stop_services
            else nullcontext,
        )
        for volume in policy.volumes
    ]
    databases = [
        DatabaseToDump(d.service, desired.container_of(d.service)) for d in policy.databases
    ] + external_dumps(client, desired, policy)
    held = {
        s.name
        for v in policy.volumes
        if v.stop_services
        for s in desired.services_mounting(desired.volumes[v.name].name)
    }
    return write_backup(
        client=client,
        target=target,
        project=desired.project,
        ident=ident,
        started=started,
        commit=commit,
        helper_image=helper_image,
        volumes=volumes,
        databases=databases,
        progress=progress,
        monotonic=monotonic,
        # A database whose service a volume's hold stops is dumped after the volumes.
        side_by_side=not held & {d.service for d in databases},
    )


@contextmanager
def _services_held_stopped(
    client: Client, desired: DesiredState, volume: str, state_dir: Path
) -> Iterator[None]:
    """The services that mount ``volume`` stopped, with the pass lock held meanwhile."""
    # Held while services are down: a pass (the daemon's, when this is
    # `backup run`) would start them again in the middle of the read.
    with exclusive_lock(state_dir / PASS_LOCK, wait_s=PASS_LOCK_WAIT_S, what="pass"):
        # The lock's last holder may be a backup killed while it held
        # services stopped: bring them back before deciding what runs.
        stop_journal.finish_interrupted_stops(client, state_dir)
        journal = stop_journal.StopJournal(state_dir)
        with stack_control.services_stopped(
            client,
            project=desired.project,
            services=[
                (s.name, desired.container_of(s.name), s.stop_grace_period_s)
                for s in desired.services_mounting(volume)
            ],
            before_stop=journal.about_to_stop,
            # Kept when a start failed: the next holder of the pass lock tries again.
            on_all_started=journal.clear,
        ):
            yield
