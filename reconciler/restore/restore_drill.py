"""The restore drill: a backup that was never restored is not known to be good.

On its schedule (``restore_drill: {every: week}`` in backup.yaml; weekly when
unset) the daemon restores the newest complete backup into scratch objects
that nothing else uses, checks it, and removes them:

- every artifact's size and SHA-256 against the manifest;
- each volume archive unpacked through the archive API into a scratch volume,
  read back, and compared entry by entry with the archive (type, size,
  SHA-256 of contents, mode, owner, link target, mtime of files);
- each dump loaded into a scratch MariaDB container of the service's own
  image (an external database's: its entry's helper image), and every
  database the dump creates found there with its tables. The external
  server itself is never touched by a drill.

The result goes to ``drill.json`` in the state dir and into ``status``. The
running stack is never touched. ``reconciler restore --drill`` runs it now.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from reconciler import notifying
from reconciler.adapters import engine_client, mariadb, stack_control, volume_archive
from reconciler.adapters.engine_client import REPORTED_ERRORS, Client
from reconciler.applied import load_applied
from reconciler.backup.backup_target import BackupTarget, open_target
from reconciler.backup.commit_policy import backup_policy
from reconciler.backup.stored_backups import list_backups
from reconciler.decide.archive_members import sanitized, screen
from reconciler.decide.dump_screening import screen_dump
from reconciler.decide.restore_planning import ArtifactRef
from reconciler.errors import DrillFailed, InvalidDesiredState, ReconcilerError
from reconciler.logs import event
from reconciler.model.backup_policy import BackupPolicy
from reconciler.model.desired import DesiredState
from reconciler.restore.restore_artifacts import (
    ChunkReader,
    decompressed,
    ensure_room,
    fetch_verified,
    spool_folder,
    without_schemas,
)
from reconciler.restore.restoring import artifact_refs, resolve_backup
from reconciler.settings import Settings
from reconciler.state import names
from reconciler.state.files import atomic_write_json, exclusive_lock, read_json
from reconciler.state.status import StatusStore

DRILL_FILE = names.DRILL
PERIODS = {"day": timedelta(days=1), "week": timedelta(weeks=1), "month": timedelta(days=30)}
DEFAULT_EVERY = "week"
# The daemon's job runs every tick; it looks at the schedule this often.
CHECK_EVERY_S = 60.0
_DATABASE = re.compile(rb"\n-- Current Database: `((?:[^`]|``)+)`")


@dataclass(frozen=True)
class Entry:
    kind: str
    size: int
    sha256: str | None
    mode: int
    uid: int
    gid: int
    link: str
    mtime: int | None


def tar_entries(chunks: Iterable[bytes]) -> dict[str, Entry]:
    """``{path: Entry}`` of a tar stream, file contents hashed as they pass."""
    reader = ChunkReader(chunks)
    entries: dict[str, Entry] = {}
    with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|") as archive:
        for member in archive:
            name = member.name.removeprefix("./").rstrip("/") or "."
            digest = None
            if member.isfile():
                data = archive.extractfile(member)
                hasher = hashlib.sha256()
                if data is not None:
                    while block := data.read(1024 * 1024):
                        hasher.update(block)
                digest = hasher.hexdigest()
            kind = "file" if member.isfile() else "dir" if member.isdir() else "link"
            if not (member.isfile() or member.isdir() or member.issym()):
                kind = f"type-{member.type!r}"
            entries[name] = Entry(
                kind=kind,
                size=member.size if member.isfile() else 0,
                sha256=digest,
                # Permission bits only: Docker's tar headers carry the file type
                # in the mode field too, our sanitized copy does not.
                mode=member.mode & 0o7777,
                uid=member.uid,
                gid=member.gid,
                link=member.linkname,
                # Folder mtimes change as files are written into them on unpack.
                mtime=None if member.isdir() else int(member.mtime),
            )
    reader.drain()  # whatever follows the end-of-archive blocks
    return entries


def compare(expected: dict[str, Entry], actual: dict[str, Entry]) -> list[str]:
    """What differs between the archive and the volume it was unpacked into."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if name == ".":
            continue  # the volume's root belongs to Docker's mount
        want, got = expected.get(name), actual.get(name)
        if want is None:
            problems.append(f"{name}: in the volume but not in the backup")
        elif got is None:
            problems.append(f"{name}: in the backup but missing after the restore")
        elif want != got:
            fields = [f for f in Entry.__dataclass_fields__ if getattr(want, f) != getattr(got, f)]
            problems.append(f"{name}: differs ({', '.join(fields)})")
    return problems


def drill_due(last: dict[str, Any] | None, *, every: str, now: datetime) -> bool:
    """Due when no drill ran yet, or the last attempt is older than the period.

    A failed drill is tried again after a day at most: the failure may have
    been the store or the engine, not the backup.
    """
    if not last or not last.get("time"):
        return True
    try:
        when = datetime.fromisoformat(str(last["time"]))
    except ValueError:
        return True
    period = PERIODS.get(every, PERIODS[DEFAULT_EVERY])
    if last.get("result") != "ok":
        period = min(period, PERIODS["day"])
    return now - when >= period


def read_drill(state_dir: Path) -> dict[str, Any] | None:
    data = read_json(state_dir / DRILL_FILE)
    return data if isinstance(data, dict) else None


def drill_counts(previous: dict[str, Any] | None, result: str) -> dict[str, int]:
    """Drills so far by result, this one included: drill.json keeps only the last
    drill, and the metrics count them across restarts (a file from before the
    counts starts from its own result)."""
    counts = {"ok": 0, "failed": 0}
    if previous is not None:
        kept = previous.get("counts")
        if isinstance(kept, dict):
            for key in counts:
                value = kept.get(key)
                counts[key] = value if isinstance(value, int) and value >= 0 else 0
        elif previous.get("result") in counts:
            counts[str(previous["result"])] = 1
    counts[result if result in counts else "failed"] += 1
    return counts


def run_drill(
    *,
    client: Client,
    target: BackupTarget,
    desired: DesiredState,
    state_dir: Path,
    backup: str = "latest",
    policy: BackupPolicy | None = None,
) -> dict[str, Any]:
    """Drill one backup; return the result recorded in drill.json (``result``: ok/failed).

    ``policy``: backup.yaml, whose external databases name their helper's image.
    """
    started = datetime.now(UTC)
    monotonic = time.monotonic()
    result: dict[str, Any] = {
        "time": started.isoformat(),
        "started": started.isoformat(),
        "finished": None,
        "source": target.store.url,
        "backup": None,
        "result": "failed",
        "error": None,
        "volumes": {},
        "databases": {},
    }
    scratch = f"{desired.project}-drill-{secrets.token_hex(4)}"
    made_volumes: list[str] = []
    made_containers: list[str] = []
    # One drill at a time (the daemon's and one by hand): a second one raises
    # StateError here and records nothing. The holder may remove the scratch
    # objects of a drill that was killed.
    lock = ExitStack()
    lock.enter_context(exclusive_lock(state_dir / names.DRILL_LOCK, wait_s=0, what="restore drill"))
    try:
        stack_control.remove_leftovers(client, project=desired.project, purposes={"drill"})
        manifest = resolve_backup(target, backup)
        result["backup"] = manifest.id
        with spool_folder(state_dir, f"drill-{manifest.id}") as tmp:
            refs = artifact_refs(manifest)
            ensure_room(tmp, refs)
            fetched = {a.key: fetch_verified(target, a, tmp) for a in refs}
            for ref in refs:
                if ref.kind == "volume":
                    volume = stack_control.scratch_volume(
                        client, name=f"{scratch}-{ref.name}", project=desired.project
                    )
                    made_volumes.append(volume)
                    result["volumes"][ref.name] = _drill_volume(
                        client, desired, ref, fetched[ref.key], volume
                    )
                else:
                    name = f"{scratch}-{ref.name}"
                    made_containers.append(name)
                    external = policy.external(ref.name) if policy else None
                    result["databases"][ref.name] = _drill_database(
                        client,
                        desired,
                        ref,
                        fetched[ref.key],
                        name,
                        image=external.image if external else None,
                    )
        result["result"] = "ok"
    except (ReconcilerError, OSError) as exc:
        result["error"] = str(exc)
    finally:
        for name in made_containers:
            stack_control.remove_container(client, name)
        for name in made_volumes:
            stack_control.remove_volume(client, name)
        lock.close()
        result["duration_s"] = round(time.monotonic() - monotonic, 3)
        result["finished"] = datetime.now(UTC).isoformat()
        result["counts"] = drill_counts(read_drill(state_dir), result["result"])
        atomic_write_json(state_dir / DRILL_FILE, result)
    level = logging.INFO if result["result"] == "ok" else logging.ERROR
    event(
        "drill.done",
        level=level,
        backup=result["backup"],
        result=result["result"],
        error=result["error"],
    )
    return result


def _drill_volume(
    client: Client,
    desired: DesiredState,
    ref: ArtifactRef,
    spooled: Path,
    volume: str,
) -> dict[str, Any]:
    image = stack_control.present_image(client, [s.image for s in desired.services.values()])
    if image is None:
        raise DrillFailed("no image of the desired state is on this engine to mount volumes with")
    what = f"volume {ref.name}"
    screen(decompressed(ref, spooled), what=what, max_bytes=ref.raw_size)
    # What the engine is given: the archive with setuid/setgid bits cleared.
    expected = tar_entries(sanitized(decompressed(ref, spooled), what=what))
    volume_archive.write_volume(
        client,
        volume=volume,
        image=image,
        project=desired.project,
        chunks=decompressed(ref, spooled),
        purpose="drill",
    )
    # Helpers labelled "drill": only the drill lock's holder removes them, so
    # a backup or a restore starting meanwhile never removes one in use.
    with volume_archive.read_volume(
        client, volume=volume, image=image, project=desired.project, purpose="drill"
    ) as chunks:
        actual = tar_entries(chunks)
    problems = compare(expected, actual)
    if problems:
        shown = "; ".join(problems[:10])
        raise DrillFailed(
            f"volume {ref.name}: {len(problems)} entr(ies) differ after the restore: {shown}"
        )
    return {"entries": len(expected), "files": sum(e.kind == "file" for e in expected.values())}


def _drill_database(
    client: Client,
    desired: DesiredState,
    ref: ArtifactRef,
    spooled: Path,
    name: str,
    *,
    image: str | None = None,
) -> dict[str, Any]:
    service = desired.services.get(ref.name)
    candidates = [image] if image else []
    candidates += [service.image] if service else []
    candidates += [s.image for s in desired.services.values() if "mariadb" in s.image]
    present = stack_control.present_image(client, candidates)
    if present is None:
        raise DrillFailed(
            f"database {ref.name}: no MariaDB image on this engine for a scratch copy"
        )
    # Screened whole before it reaches even a scratch server (screen_dump).
    screen_dump(without_schemas(decompressed(ref, spooled)), artifact=ref.key)
    stack_control.scratch_database(client, name=name, image=present, project=desired.project)
    seen: list[str] = []
    mariadb.load_dump(
        client,
        container=name,
        chunks=_databases_seen(without_schemas(decompressed(ref, spooled)), seen),
    )
    counts = stack_control.table_counts(client, name)
    missing = [db for db in seen if db not in stack_control.SYSTEM_DATABASES and db not in counts]
    found = stack_control.user_databases(client, name)
    missing = [db for db in missing if db not in found]
    if missing:
        raise DrillFailed(f"database {ref.name}: the dump loaded, but {', '.join(missing)} missing")
    return {"databases": {db: counts.get(db, 0) for db in seen if db in found}}


def _databases_seen(chunks: Iterable[bytes], seen: list[str]) -> Iterator[bytes]:
    tail = b""
    for chunk in chunks:
        data = tail + chunk
        for match in _DATABASE.finditer(data):
            name = match.group(1).replace(b"``", b"`").decode(errors="replace")
            if name not in seen:
                seen.append(name)
        tail = data[-300:]
        yield chunk


# -- in the daemon, and by hand ----------------------------------------------------------


def _applied(settings: Settings) -> tuple[str, DesiredState, BackupPolicy | None] | None:

    applied = load_applied(settings)
    if applied is None:
        return None
    checkout, desired = applied
    return checkout.commit, desired, backup_policy(checkout, desired, settings)


def run_drill_now(settings: Settings, *, backup: str, source: str | None) -> dict[str, Any]:
    """``reconciler restore --drill``: drill a backup of the applied commit's stack now."""
    try:
        applied = _applied(settings)
    except InvalidDesiredState as exc:
        raise ReconcilerError(f"the applied commit's desired state does not load:\n{exc}") from exc
    if applied is None:
        raise ReconcilerError("nothing is deployed yet: run `reconciler sync` first")
    commit, desired, policy = applied
    target = source or (policy.target if policy else settings.default_backup_target)
    client = engine_client.connect()
    try:
        result = run_drill(
            client=client,
            target=open_target(target, settings.environ, state_dir=settings.state_dir),
            desired=desired,
            state_dir=settings.state_dir,
            backup=backup,
            policy=policy,
        )
    finally:
        client.close()
    notifying.drill_finished(settings, result, commit=commit)
    return result


def drill_job(
    settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Callable[[], None]:
    """The daemon job: about once a minute, run the drill when it is due."""
    last_check = [float("-inf")]
    cache: dict[str, tuple[DesiredState, BackupPolicy | None]] = {}

    def restore_drill() -> None:
        if time.monotonic() - last_check[0] < CHECK_EVERY_S:
            return
        last_check[0] = time.monotonic()
        commit = StatusStore(settings.state_dir).load().applied_commit
        if commit is None:
            return
        if commit not in cache:
            try:
                applied = _applied(settings)
            except (InvalidDesiredState, ReconcilerError) as exc:
                event("drill.skipped", level=logging.WARNING, error=str(exc))
                return
            if applied is None:
                return
            cache.clear()
            cache[applied[0]] = (applied[1], applied[2])
        desired, policy = cache[commit] if commit in cache else next(iter(cache.values()))
        if policy is None:
            return  # nothing is backed up on a schedule: nothing to drill
        every = policy.restore_drill.every if policy.restore_drill else DEFAULT_EVERY
        if not drill_due(read_drill(settings.state_dir), every=every, now=clock()):
            return
        try:
            target = open_target(policy.target, settings.environ, state_dir=settings.state_dir)
            if not any(s.state == "complete" for s in _list(target)):
                return  # no backup yet: the first one is drilled after it is made
            client = engine_client.connect()
        except REPORTED_ERRORS as exc:
            event("drill.skipped", level=logging.WARNING, error=str(exc))
            return
        try:
            result = run_drill(
                client=client,
                target=target,
                desired=desired,
                state_dir=settings.state_dir,
                policy=policy,
            )
            notifying.drill_finished(settings, result, commit=commit)
        except ReconcilerError as exc:  # another drill runs (by hand)
            event("drill.skipped", level=logging.WARNING, error=str(exc))
        finally:
            client.close()

    return restore_drill


def _list(target: BackupTarget) -> list[Any]:

    return list(list_backups(target))
