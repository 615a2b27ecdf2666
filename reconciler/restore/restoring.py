"""The restore engine: one backup written back over a stack's volumes and databases.

The same engine serves restore.yaml requests (``restore_pass.py``) and
``reconciler restore`` by hand. In order, and each step only when the one
before succeeded:

1. **Resolve** ``latest`` (the newest backup with a manifest) or a backup id
   in the source (another environment's target, or backup.yaml's).
2. **Plan** (pure, ``decide/restore_planning``): the volumes and dumps to
   write, the services to stop.
3. **Verify first**: the spool folder must have room for every needed
   artifact (else ``NoRoom``, saying how much); each is downloaded there and
   checked against the manifest's size, SHA-256 and decompressed size. Every
   byte written later comes from these copies, never streamed from the store.
4. **Stop** the services that use the volumes or depend on the databases.
5. **Safety copy**: the current contents of each volume and database to be
   replaced become a regular backup under ``<target>/pre-restore/<request>/``,
   manifest last, recorded in the ledger before anything is touched, so the
   restore can itself be undone with a request naming that source. Taken after
   the stop, so no write is lost between the copy and the replace.
6. **Replace** each volume exactly (emptied, then the tar unpacked through the
   archive API) and **load** each dump (user databases dropped first; the
   server's own ``mysql`` schema is skipped so accounts and passwords stay
   those of this environment).
7. **Start** the services again and wait for their health checks.

A failure before step 6 raises ``RestoreFailed`` saying nothing was
overwritten. A failure in step 6 first **puts the safety copy back** (the same
verify-then-write path) over what had begun to change, then starts the
services; the error names both failures when the put-back fails too.
Services stopped here are started again on every way out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import zstandard

from reconciler.adapters import (
    database_helper,
    engine_client,
    mariadb,
    stack_control,
    volume_archive,
)
from reconciler.adapters.docker_engine import DockerEngine
from reconciler.adapters.engine_client import ENGINE_ERRORS, REPORTED_ERRORS, Client
from reconciler.backup import restic_backups
from reconciler.backup.backing_up import backup_lock
from reconciler.backup.backup_target import BackupTarget, open_target, safety_url
from reconciler.backup.backup_writing import (
    HELPER_IMAGE_VARIABLE,
    DatabaseToDump,
    VolumeToRead,
    restic_helper_image,
    write_backup,
)
from reconciler.backup.manifests import Artifact, Manifest, backup_id
from reconciler.backup.stored_backups import list_backups, read_manifest
from reconciler.concurrency import both, concurrently
from reconciler.decide.archive_members import screen
from reconciler.decide.dump_screening import screen_dump
from reconciler.decide.restore_planning import (
    ArtifactRef,
    DatabaseRestore,
    RestorePlan,
    RestorePlanError,
    plan_restore,
)
from reconciler.errors import BackupBusy, ReconcilerError, RestoreFailed, VerifyError
from reconciler.logs import event
from reconciler.model.backup_policy import ExternalDatabase
from reconciler.model.desired import DesiredState
from reconciler.model.restore_requests import LATEST
from reconciler.restore.restore_artifacts import (
    decompressed,
    ensure_room,
    fetch_verified,
    spool_folder,
    without_schemas,
)
from reconciler.restore.volume_staging import STAGE_PURPOSE, StagedVolume, Stages, staging

# How long a restore waits for a running backup to finish before it fails.
BACKUP_WAIT_S = 1800.0

# Artifacts copied or written at once: the engine, the store and the database
# server do most of the work, in their own processes.
WORKERS = 2

Step = Callable[[str], None]


_ERRORS: tuple[type[Exception], ...] = (
    ReconcilerError,
    RestorePlanError,
    OSError,
    zstandard.ZstdError,
    *ENGINE_ERRORS,
)


def failed_after_writing(
    error: str, *, put_back_error: str | None, safety: str, safety_id: str
) -> str:
    """The error of a restore that failed once it had begun to write: both failures, if two."""
    if put_back_error is None:
        return (
            f"{error}; the safety copy {safety} (backup {safety_id}) was put back, so the "
            "volumes and databases hold what they held before the restore"
        )
    return (
        f"{error}; putting the safety copy back failed too: {put_back_error}; the contents "
        f"from before the restore are in the safety copy {safety} (backup {safety_id}): "
        f"restore it with `reconciler restore {safety_id} --source {safety} --yes`"
    )


@dataclass(frozen=True)
class RestoreOptions:
    backup: str = LATEST
    source: str | None = None  # None: the environment's own target
    volumes: tuple[str, ...] | None = None
    databases: tuple[str, ...] | None = None
    # A partial restore: files or folders of the one volume in ``volumes``.
    paths: tuple[str, ...] | None = None


@dataclass
class RestoreContext:
    """The stack and the places a restore works with."""

    client: Client
    desired: DesiredState
    state_dir: Path
    default_source: str  # backup.yaml's target (or the default file target)
    safety_target: str  # where safety copies go (normally the same target)
    commit: str | None = None
    spool_dir: Path | None = None  # RECONCILER_SPOOL_DIR; None: the state dir
    # The merged environment: RECONCILER_BACKUP_KEY and the AWS variables.
    environ: Mapping[str, str] = field(default_factory=dict)
    # Called with ledger fields as they become known (backup, source,
    # safety_copy, safety_copy_backup, done): the ledger is written at once.
    record: Callable[..., None] = field(default=lambda **_fields: None)
    # backup.yaml's databases outside the stack, by name: their dumps load there.
    externals: Mapping[str, ExternalDatabase] = field(default_factory=dict)

    def external_target(self, entry: ExternalDatabase) -> database_helper.ExternalTarget:
        return database_helper.external_target(
            entry, self.desired, own_network_mode=engine_client.own_network_mode(self.client)
        )


@contextmanager
def database_endpoint(
    ctx: RestoreContext, database: DatabaseRestore, *, purpose: str = "restore"
) -> Iterator[tuple[str, mariadb.RemoteServer | None]]:
    """Where a dump of ``database`` loads: the service's container, or a helper that
    reaches the external server (made here, removed on the way out)."""
    if database.external is None:
        yield database.container, None
        return
    target = ctx.external_target(database.external)
    with database_helper.helper(
        ctx.client, project=ctx.desired.project, target=target, purpose=purpose
    ) as container:
        yield container, target.remote


@dataclass(frozen=True)
class RestoreReport:
    request_id: str
    backup: str
    source: str
    plan: RestorePlan
    safety_copy: str | None
    safety_copy_backup: str | None
    done: tuple[str, ...]
    duration_s: float
    # Seconds per phase: "verify" (resolve, download, check), "stop", "safety_copy", "replace".
    timings: dict[str, float] = field(default_factory=dict)


def resolve_backup(target: BackupTarget, backup: str) -> Manifest:
    """The manifest of ``backup`` (``latest`` or an id) in ``target``; VerifyError when none."""
    if backup == LATEST:
        complete = [s for s in list_backups(target) if s.state == "complete"]
        if not complete:
            raise VerifyError(f"no complete backup (one with a manifest) in {target.store.url}")
        backup = complete[0].id
    return read_manifest(target, backup)


def artifact_refs(manifest: Manifest) -> list[ArtifactRef]:
    return [_ref(a) for a in manifest.artifacts]


def _ref(artifact: Artifact) -> ArtifactRef:
    if not artifact.snapshot:
        a = artifact
        return ArtifactRef(a.kind, a.name, a.key, a.size, a.sha256, a.raw_size)
    # A restic part: what restic reads back may be as long as what the backup
    # read (a volume's tar adds a header per file), and the spool keeps at most that.
    bound = (
        restic_backups.volume_limit(artifact.raw_size, artifact.files)
        if artifact.kind == "volume"
        else artifact.raw_size
    )
    return ArtifactRef(
        artifact.kind,
        artifact.name,
        artifact.key,
        size=bound,
        sha256="",
        raw_size=bound,
        snapshot=artifact.snapshot,
    )


def run_restore(request_id: str, options: RestoreOptions, ctx: RestoreContext) -> RestoreReport:
    """Run one restore; raise ``RestoreFailed`` (saying what was done) on any failure.

    The caller holds the pass lock and the backup lock (``waiting_backup_lock``).
    """
    started = time.monotonic()
    source = options.source or ctx.default_source
    done: list[str] = []
    safety: str | None = None
    safety_id: str | None = None
    touched = False
    backup: str | None = None
    timings: dict[str, float] = {}
    mark = [time.monotonic()]

    def phase(name: str) -> None:
        timings[name] = round(time.monotonic() - mark[0], 3)
        mark[0] = time.monotonic()

    lock = threading.Lock()

    def step(text: str) -> None:
        with lock:  # steps come from the worker threads of the replace phase
            done.append(text)
            ctx.record(done=list(done))
        event("restore.step", id=request_id, step=text)

    try:
        with (
            spool_folder(ctx.spool_dir or ctx.state_dir, request_id) as tmp,
            staging(ctx.client, project=ctx.desired.project) as stages,
        ):
            target = open_target(source, ctx.environ, state_dir=ctx.state_dir)
            manifest = resolve_backup(target, options.backup)
            backup = manifest.id
            ctx.record(backup=backup, source=target.store.url)
            plan = plan_restore(
                artifacts=artifact_refs(manifest),
                desired=ctx.desired,
                volumes=options.volumes,
                databases=options.databases,
                paths=options.paths,
                externals=ctx.externals,
            )
            stages.helper_image = _check_stack(ctx, plan)
            # Helpers a killed restore (or its safety copy, or a killed backup) left
            # behind: the pass and backup locks are held, so none is in use.
            stack_control.remove_leftovers(
                ctx.client,
                project=ctx.desired.project,
                purposes={"restore", "restore-empty", STAGE_PURPOSE, "backup"},
            )
            # Every byte is read, authenticated and judged before one is written
            # (decide/archive_members.py, decide/dump_screening.py): no room for
            # the verified copy is a refusal, never a stream.
            fetched, staged = _verified(target, plan, tmp, stages, what=f"backup {backup}")
            event(
                "restore.verified",
                id=request_id,
                backup=backup,
                artifacts=len(fetched) + len(staged),
            )
            phase("verify")
            safety_target = open_target(
                safety_url(ctx.safety_target, request_id), ctx.environ, state_dir=ctx.state_dir
            )
            stopped: list[str] = []
            failure: BaseException | None = None
            try:
                # Stopped first: the safety copy must not miss a write made after it.
                _stop(ctx, plan.stop, step, stopped)
                phase("stop")
                safety_manifest = _safety_copy(
                    ctx, plan, safety_target, skip_databases=set(stopped)
                )
                safety, safety_id = safety_target.url, safety_manifest.id
                ctx.record(safety_copy=safety, safety_copy_backup=safety_id)
                step(f"safety copy {safety_id} written to {safety}")
                phase("safety_copy")
                touched = True
                written: set[str] = set()
                try:
                    _write(
                        ctx,
                        plan,
                        _Verified(fetched, staged, stages),
                        step,
                        stopped=stopped,
                        written=written,
                    )
                except _ERRORS as exc:
                    for path in fetched.values():
                        path.unlink(missing_ok=True)  # room for the safety copy's artifacts
                    stages.remove()
                    problem = _put_back(
                        ctx,
                        plan,
                        safety_target,
                        safety_manifest,
                        folder=tmp,
                        stages=stages,
                        step=step,
                        stopped=stopped,
                        written=written,
                    )
                    ctx.record(put_back=problem or "ok")
                    raise RestoreFailed(
                        failed_after_writing(
                            str(exc), put_back_error=problem, safety=safety, safety_id=safety_id
                        ),
                        done=done,
                        safety_copy=safety,
                        touched=True,
                        backup=backup,
                        put_back=problem or "ok",
                    ) from exc
                phase("replace")
            except BaseException as exc:
                failure = exc
                raise
            finally:
                # On every way out, and only once a put-back is over.
                problems = _start_stopped(ctx, stopped, step)
                if problems:
                    text = "services did not come back: " + "; ".join(problems)
                    if isinstance(failure, RestoreFailed):
                        failure.message += f"; {text}"
                    elif failure is None:
                        raise ReconcilerError(text)
                    else:
                        raise ReconcilerError(f"{failure}; {text}") from failure
    except RestoreFailed as exc:
        event("restore.failed", level=logging.ERROR, id=request_id, error=str(exc))
        raise
    except _ERRORS as exc:
        message = str(exc)
        event("restore.failed", level=logging.ERROR, id=request_id, error=message)
        raise RestoreFailed(
            message, done=done, safety_copy=safety, touched=touched, backup=backup
        ) from exc
    duration = round(time.monotonic() - started, 3)
    event("restore.done", id=request_id, backup=backup, duration_s=duration)
    return RestoreReport(
        request_id=request_id,
        backup=manifest.id,
        source=target.store.url,
        plan=plan,
        safety_copy=safety,
        safety_copy_backup=safety_id,
        done=tuple(done),
        duration_s=duration,
        timings=timings,
    )


@contextmanager
def waiting_backup_lock(state_dir: Path, *, wait_s: float = BACKUP_WAIT_S) -> Iterator[None]:
    """Hold the backup lock (no backup may read a half-restored volume), waiting ``wait_s``.

    Callers take it before the pass lock, in the backup pipeline's order (it
    holds the backup lock, then takes the pass lock to stop services): the
    pass, which already holds the pass lock, must not wait (``wait_s=0``).
    Raises ``BackupBusy`` when a backup still runs after ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with backup_lock(state_dir):
                yield
                return
        except BackupBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(2)


def _check_stack(ctx: RestoreContext, plan: RestorePlan) -> str:
    """What must already exist, checked before anything is downloaded or touched.

    The image with restic that stages the volumes and reads their safety
    copy, when the plan restores volumes ("" when it restores none).
    """
    elsewhere = stack_control.volumes_elsewhere(
        ctx.client, ctx.desired, [volume.key for volume in plan.volumes]
    )
    if elsewhere:
        raise ReconcilerError("; ".join(elsewhere))
    for volume in plan.volumes:
        if not stack_control.volume_exists(ctx.client, volume.volume):
            raise ReconcilerError(
                f"volume {volume.volume} does not exist: deploy the stack first (reconciler sync)"
            )
        if _helper_image(ctx, volume.volume) is None:
            raise ReconcilerError(
                f"no image on this engine to mount volume {volume.volume} with: deploy the "
                "stack first (reconciler sync)"
            )
    for database in plan.databases:
        if database.external is not None:
            # The server answers, with the credentials given, and the helper's
            # client has --sandbox: known before anything is fetched or stopped.
            with database_endpoint(ctx, database) as (helper, remote):
                mariadb.check_sandbox(ctx.client, container=helper)
                stack_control.user_databases(ctx.client, helper, remote)
            continue
        container = stack_control.owned_container(
            ctx.client, ctx.desired.project, ctx.desired.container_of(database.service)
        )
        if container is None or container.status != "running":
            raise ReconcilerError(
                f"database container {database.container} is not running: deploy the stack "
                "first (reconciler sync)"
            )
        mariadb.check_sandbox(ctx.client, container=database.container)
    if not plan.volumes:
        return ""
    # Staging and the safety copy read the volumes with restic: an image with
    # restic must be there before anything is fetched or stopped.
    return restic_helper_image(
        ctx.client, ctx.environ.get(HELPER_IMAGE_VARIABLE) or None, plan.volumes[0].key
    )


def _helper_image(ctx: RestoreContext, volume: str) -> str | None:
    """An image already present to mount ``volume`` in: its users' first, then any other."""
    users = [s.image for s in ctx.desired.services_mounting(volume)]
    others = [s.image for s in ctx.desired.services.values() if s.image not in users]
    return stack_control.present_image(ctx.client, [*users, *others])


# -- verify -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Verified:
    """What a restore writes from: spooled copies by artifact key, staged volumes by key."""

    fetched: dict[str, Path]
    staged: dict[str, StagedVolume]
    stages: Stages


def _staged_part(artifact: ArtifactRef) -> bool:
    # A volume of the restic format is staged by restic; the rest goes to the spool.
    return artifact.kind == "volume" and bool(artifact.snapshot)


def _verified(
    target: BackupTarget, plan: RestorePlan, folder: Path, stages: Stages, *, what: str
) -> tuple[dict[str, Path], dict[str, StagedVolume]]:
    """Fetch and judge every artifact of ``plan``: spooled copies and staged volumes.

    The volumes are staged while the dumps are fetched: restic, the engine's
    disk and the store each do their part at once.
    """
    spooled = [a for a in plan.artifacts if not _staged_part(a)]
    ensure_room(folder, spooled)

    def stage_volumes() -> dict[str, StagedVolume]:
        return {
            v.artifact.key: stages.stage(
                target, v.artifact, volume=v.volume, what=f"{what} volume {v.key}", paths=v.paths
            )
            for v in plan.volumes
            if _staged_part(v.artifact)
        }

    paths = {v.artifact.key: v.paths for v in plan.volumes}

    def fetch_spooled() -> dict[str, Path]:
        fetched: dict[str, Path] = {}
        for artifact in spooled:
            path = fetched[artifact.key] = fetch_verified(target, artifact, folder)
            # Every member of an old-format archive and every statement of a
            # dump is judged here, while the volumes are still being staged.
            if artifact.kind == "volume":
                screen(
                    decompressed(artifact, path),
                    what=f"{what} volume {artifact.name}",
                    max_bytes=artifact.raw_size,
                    paths=paths[artifact.key],
                )
            else:
                screen_dump(
                    without_schemas(decompressed(artifact, path)),
                    artifact=f"{what} {artifact.key}",
                )
        return fetched

    staged, fetched = both(stage_volumes, fetch_spooled, name="restore")
    return fetched, staged


# -- safety copy ----------------------------------------------------------------------


def _safety_copy(
    ctx: RestoreContext, plan: RestorePlan, target: BackupTarget, *, skip_databases: set[str]
) -> Manifest:
    """A complete backup of what ``plan`` will overwrite; its manifest, once stored.

    Taken with the services of ``plan.stop`` stopped. A database in
    ``skip_databases`` is stopped too (its data volume is replaced): no dump
    can be taken, and the copy of that volume holds its files. It goes to the
    repository of this environment's target, where it shares what is
    unchanged with the last backup (backup_target.py).
    """
    started = datetime.now(UTC)
    return write_backup(
        client=ctx.client,
        target=target,
        project=ctx.desired.project,
        ident=backup_id(started),
        started=started,
        commit=ctx.commit,
        helper_image=ctx.environ.get(HELPER_IMAGE_VARIABLE) or None,
        volumes=[VolumeToRead(key=v.key, volume=v.volume) for v in plan.volumes],
        databases=[
            DatabaseToDump(
                d.service,
                d.container,
                external=ctx.external_target(d.external) if d.external else None,
            )
            for d in plan.databases
            if d.service not in skip_databases
        ],
    )


# -- replace ---------------------------------------------------------------------------


def _stop(ctx: RestoreContext, names: Iterable[str], step: Step, stopped: list[str]) -> None:
    """Stop each service of ``names`` not yet stopped here; ``stopped`` gets those that ran."""
    for name in names:
        if name in stopped:
            continue
        grace = ctx.desired.services[name].stop_grace_period_s
        # Recorded first: the engine finishes a stop even when we are killed
        # during it, and the pass that recovers the request must start it again.
        step(f"stopping {name}")
        container = ctx.desired.container_of(name)
        if stack_control.stop_service(ctx.client, ctx.desired.project, container, grace_s=grace):
            stopped.append(name)
            step(f"stopped {name}")


def _write(
    ctx: RestoreContext,
    plan: RestorePlan,
    verified: _Verified,
    step: Step,
    *,
    stopped: list[str],
    written: set[str],
) -> None:
    """Replace the volumes and load the dumps of ``plan`` from their verified copies.

    A staged volume is copied in from its staging volume; an old-format one
    is unpacked from its spooled tar.

    ``written`` gets ``volume:KEY`` and ``database:SERVICE`` as each begins to
    change; a database service in ``stopped`` is started to load its dump.
    """
    project = ctx.desired.project
    fetched = verified.fetched

    def restore_volumes() -> None:
        for volume in plan.volumes:
            where = f" ({', '.join(volume.paths)})" if volume.paths else ""
            staged = verified.staged.get(volume.artifact.key)
            written.add(f"volume:{volume.key}")
            if staged is not None:
                step(f"replacing volume {volume.volume}{where} from its staged copy")
                verified.stages.write(staged, volume=volume.volume, paths=volume.paths)
                step(f"restored volume {volume.volume}{where}")
                continue
            image = _helper_image(ctx, volume.volume)
            assert image is not None
            # Exact: what is not in the backup goes (it is in the safety copy);
            # with paths, only under those paths.
            stack_control.empty_volume(
                ctx.client,
                volume=volume.volume,
                image=image,
                project=project,
                paths=volume.paths,
            )
            step(f"emptied volume {volume.volume}{where}")
            volume_archive.write_volume(
                ctx.client,
                volume=volume.volume,
                image=image,
                project=project,
                chunks=decompressed(volume.artifact, fetched[volume.artifact.key]),
                paths=volume.paths,
            )
            step(f"restored volume {volume.volume}{where}")

    def load(database: DatabaseRestore) -> None:
        with database_endpoint(ctx, database) as (container, remote):
            # An external server: only the databases its entry names are dropped.
            existing = stack_control.user_databases(ctx.client, container, remote)
            chunks = decompressed(database.artifact, fetched[database.artifact.key])
            written.add(f"database:{database.service}")
            mariadb.load_dump(
                ctx.client,
                container=container,
                chunks=_prefixed(stack_control.drop_sql(existing), without_schemas(chunks)),
                remote=remote,
            )
        step(f"loaded database {database.service}")

    # Volumes and the dumps of running databases at once: the engine
    # unpacks the tar while the server loads the dump.
    running = [d for d in plan.databases if d.service not in stopped]
    work: list[Callable[[], None]] = [restore_volumes]
    work += [partial(load, d) for d in running]
    concurrently(work, workers=WORKERS, name="restore")
    for database in plan.databases:
        if database.service in stopped:
            # Its data volume was replaced: the server must run to load the dump.
            _start_ready(ctx, database.service)
            stopped.remove(database.service)
            step(f"started {database.service}")
            load(database)


def _put_back(
    ctx: RestoreContext,
    plan: RestorePlan,
    target: BackupTarget,
    safety: Manifest,
    *,
    folder: Path,
    stages: Stages,
    step: Step,
    stopped: list[str],
    written: set[str],
) -> str | None:
    """Write the safety copy back over what the failed restore began to change.

    The same verify-then-write path as the restore itself, with the services
    of ``plan.stop`` stopped again (a database may have been started to load
    its dump). None when it was put back, else why not.
    """
    step("putting the safety copy back")
    refs = {(a.kind, a.name): a for a in artifact_refs(safety)}
    back = RestorePlan(
        volumes=tuple(
            replace(v, artifact=refs[("volume", v.key)])
            for v in plan.volumes
            if f"volume:{v.key}" in written and ("volume", v.key) in refs
        ),
        databases=tuple(
            replace(d, artifact=refs[("database", d.service)])
            for d in plan.databases
            if f"database:{d.service}" in written and ("database", d.service) in refs
        ),
        stop=plan.stop,
    )
    try:
        _stop(ctx, plan.stop, step, stopped)
        fetched, staged = _verified(target, back, folder, stages, what=f"safety copy {safety.id}")
        _write(ctx, back, _Verified(fetched, staged, stages), step, stopped=stopped, written=set())
    except _ERRORS as exc:
        event("restore.put_back", level=logging.ERROR, error=str(exc))
        return str(exc)
    step(f"put the safety copy back ({back.describe()})")
    return None


def _start_stopped(ctx: RestoreContext, stopped: list[str], step: Step) -> list[str]:
    """Start what this restore stopped; the problems of those that did not come back."""
    problems = []
    for name in list(stopped):
        try:
            _start_ready(ctx, name)
            stopped.remove(name)
            step(f"started {name}")
        except REPORTED_ERRORS as exc:
            problems.append(f"{name}: {exc}")
    return problems


def _start_ready(ctx: RestoreContext, service: str) -> None:
    spec = ctx.desired.services[service]
    name = ctx.desired.container_of(service)
    container_id = stack_control.start_service(ctx.client, ctx.desired.project, name)
    check = spec.healthcheck
    timeout = check.max_wait_s() if check is not None and not check.disabled else 60.0
    problem = DockerEngine(ctx.client).wait_ready(container_id, check, timeout_s=timeout)
    if problem is not None:
        raise ReconcilerError(f"{name}: {problem}")


def _prefixed(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
