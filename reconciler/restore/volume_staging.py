"""A volume's restic part, staged: restored by restic into a volume of its own, copied in.

Why a staging volume: every byte a restore writes must be read and
authenticated before the live volume changes, and restic authenticates
what it restores. Restoring into a fresh volume on the engine's disk does
that at restic's own speed, with no tar stream through this process, and
the replace after the stop is a local copy (``cp -a``), not an unpack.

``Stages.stage`` judges and stages one volume part, before any service stops:

1. the snapshot's listing (``restic ls``: names, types, modes, sizes) is
   screened by ``decide/archive_members.NodeScreen`` before restic writes a
   byte: no device, fifo or socket, no name met twice or stored under another
   name, no more bytes than the manifest declares, the paths of a partial
   restore present;
2. the engine's volume disk must hold the staged copy and, once the live
   volume is emptied, the copy into it; else the restore refuses, saying how
   much it needs;
3. ``restic restore`` into the staging volume, in a restic helper;
4. the staged tree: setuid and setgid bits cleared, each symbolic link judged
   with its target, anything but files, folders and links refused.

``write_staged`` then replaces the live volume (or only the paths) from it.
Staging volumes are labelled ``restore-stage`` and removed on every way out;
one a killed restore left is removed by the next (``remove_leftovers``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.adapters import engine_client, restic_helper, stack_control
from reconciler.adapters.engine_client import Client
from reconciler.adapters.volume_archive import MOUNT_POINT
from reconciler.backup import restic_backups
from reconciler.backup.backup_target import BackupTarget
from reconciler.decide.archive_members import NodeScreen
from reconciler.decide.restore_planning import ArtifactRef
from reconciler.errors import (
    ArchiveRefused,
    NoStagingRoom,
    ReconcilerError,
    ResticBackupError,
    ResticError,
    VerifyError,
)
from reconciler.logs import event

STAGE_PURPOSE = "restore-stage"
STAGE_MOUNT = "/.reconciler-stage"
BLOCK = 4096
MB = 1000 * 1000
# Room left free on the engine's volume disk beyond the staged copy: the
# services and the engine still write there.
STAGE_HEADROOM = 256 * MB

# "$1": the volume's compose key (a checked name): restic restores the
# snapshot's /volume/<key> under the staging mount.
_ROOM_SCRIPT = (
    f'df -B1 --output=avail "{STAGE_MOUNT}" | tail -n 1 && du -s -B1 "{MOUNT_POINT}" | cut -f1'
)
_JUDGE_SCRIPT = (
    f'cd "{STAGE_MOUNT}/volume/$1" || exit 3; '
    "find . ! -type l -perm /6000 -exec chmod ug-s {} + || exit 1; "
    "find . ! -type f ! -type d ! -type l -printf 'S%P\\0' || exit 1; "
    "find . -type l -printf 'L%P\\0%l\\0'"
)
_REPLACE_SCRIPT = (
    f'cd "{MOUNT_POINT}" && rm -rf -- ./* ./.[!.]* ./..?* && [ -z "$(ls -A "{MOUNT_POINT}")" ] '
    f'&& cp -a "{STAGE_MOUNT}/volume/$1/." "{MOUNT_POINT}/"'
)
# "$@" after the key: paths relative to the volume, checked by the request's
# model (no '..', not absolute); --parents brings their folders' modes too.
_REPLACE_PATHS_SCRIPT = (
    'key="$1"; shift; '
    f'for p in "$@"; do rm -rf -- "{MOUNT_POINT}/$p" || exit 1; done; '
    f'cd "{STAGE_MOUNT}/volume/$key" || exit 3; '
    f'for p in "$@"; do cp -a --parents -- "./$p" "{MOUNT_POINT}/" || exit 1; done'
)


@dataclass(frozen=True)
class StagedVolume:
    """A volume part restored, judged and ready in ``stage`` (a volume of the engine)."""

    key: str  # the compose key, as the snapshot records it
    stage: str
    members: int
    bytes: int
    setid_members: int


def disk_bytes(members: int, size: int) -> int:
    """What ``members`` holding ``size`` bytes of files take on disk, at most (a block each)."""
    return size + (members + 1) * BLOCK


def staging_room_problem(*, staged: int, free: int, live: int, volume: str) -> str | None:
    """Why the engine's disk cannot take the staged copy and the copy in; None when it can.

    Staging takes ``staged``; emptying the live volume gives back ``live``
    before the copy in takes ``staged`` again (both volumes share the disk).
    """
    needed = staged + max(0, staged - live) + STAGE_HEADROOM
    if needed <= free:
        return None
    return (
        f"volume {volume}: the restore needs {-(-needed // MB)} MB free on the Docker engine's "
        f"volume disk to restore and check the backup before it overwrites anything, "
        f"{free // MB} MB free: free space there; nothing was touched"
    )


@dataclass
class Stages:
    """The staging volumes of one restore; ``removed`` on every way out."""

    client: Client
    project: str
    helper_image: str = ""  # an image with restic, known once the plan is checked
    created: list[str] = field(default_factory=list)

    def stage(
        self,
        target: BackupTarget,
        artifact: ArtifactRef,
        *,
        volume: str,
        what: str,
        paths: tuple[str, ...] | None = None,
    ) -> StagedVolume:
        """Judge, stage and judge again ``artifact`` (a restic volume part) for ``volume``."""
        assert self.helper_image, "the image with restic is set before anything is staged"
        try:
            return self._stage(target, artifact, volume=volume, what=what, paths=paths)
        except (ResticBackupError, ResticError) as exc:
            # Not Unavailable: a store that cannot be reached says nothing of the backup.
            raise VerifyError(f"{what}: does not read back: {exc}; the backup is refused") from exc

    def _stage(
        self,
        target: BackupTarget,
        artifact: ArtifactRef,
        *,
        volume: str,
        what: str,
        paths: tuple[str, ...] | None,
    ) -> StagedVolume:
        key = artifact.name
        screen = NodeScreen(what=what, max_bytes=artifact.raw_size, paths=paths)
        restic_backups.volume_members(
            target,
            snapshot=artifact.snapshot,
            volume=key,
            on_member=lambda member, name: screen.add(member, own_name=name),
        )
        summary = screen.finish()
        stage = f"{self.project}-{STAGE_PURPOSE}-{secrets.token_hex(4)}"
        stack_control.labelled_volume(
            self.client, name=stage, project=self.project, purpose=STAGE_PURPOSE
        )
        self.created.append(stage)
        self._check_room(stage, volume, disk_bytes(summary.members, summary.bytes))
        event("restore.staging", volume=volume, stage=stage, bytes=summary.bytes)
        runner = restic_helper.HelperRunner(
            self.client,
            image=self.helper_image,
            project=self.project,
            writable={stage: STAGE_MOUNT},
            binds=[target.local_path] if target.local_path else [],
            network_mode=engine_client.own_network_mode(self.client),
            purpose="restore",
        )
        target.repository(runner).restore(artifact.snapshot, target=Path(STAGE_MOUNT))
        self._judge_staged(stage, key, screen)
        event("restore.staged", volume=volume, stage=stage, members=summary.members)
        return StagedVolume(
            key=key,
            stage=stage,
            members=summary.members,
            bytes=summary.bytes,
            setid_members=summary.setid_members,
        )

    def _check_room(self, stage: str, volume: str, staged: int) -> None:
        out = self._script(
            _ROOM_SCRIPT,
            [],
            {stage: (STAGE_MOUNT, "ro"), volume: (MOUNT_POINT, "ro")},
            doing=f"measuring room for volume {volume}",
        )
        figures = out.decode(errors="replace").split()
        if len(figures) != 2 or not all(f.isdigit() for f in figures):
            raise ReconcilerError(
                f"measuring room for volume {volume}: df and du said {out[:200]!r}"
            )
        problem = staging_room_problem(
            staged=staged, free=int(figures[0]), live=int(figures[1]), volume=volume
        )
        if problem is not None:
            raise NoStagingRoom(problem)

    def _judge_staged(self, stage: str, key: str, screen: NodeScreen) -> None:
        out = self._script(
            _JUDGE_SCRIPT,
            [key],
            {stage: (STAGE_MOUNT, "rw")},
            doing=f"checking staged volume {key}",
        )
        fields = out.split(b"\0")
        if fields[-1] != b"":
            raise ReconcilerError(f"checking staged volume {key}: find's listing is cut short")
        fields.pop()
        while fields:
            record = fields.pop(0).decode("utf-8", "surrogateescape")
            if record.startswith("S"):
                raise ArchiveRefused(
                    f"{screen.what}: member {'./' + record[1:]!r} is not a file, folder or link "
                    "once restored: only files, folders and links are restored"
                )
            if not record.startswith("L") or not fields:
                raise ReconcilerError(f"checking staged volume {key}: find said {record[:200]!r}")
            screen.check_link(record[1:], fields.pop(0).decode("utf-8", "surrogateescape"))

    def _script(
        self, script: str, arguments: list[str], mounts: dict[str, tuple[str, str]], *, doing: str
    ) -> bytes:
        return stack_control.run_script(
            self.client,
            image=self.helper_image,
            project=self.project,
            purpose="restore",
            mounts=mounts,
            script=script,
            arguments=arguments,
            doing=doing,
        )

    def write(self, staged: StagedVolume, *, volume: str, paths: tuple[str, ...] | None) -> None:
        """Replace ``volume`` (or only ``paths`` in it) with the staged copy: exact."""
        script, arguments = (
            (_REPLACE_SCRIPT, [staged.key])
            if paths is None
            else (_REPLACE_PATHS_SCRIPT, [staged.key, *paths])
        )
        self._script(
            script,
            arguments,
            {staged.stage: (STAGE_MOUNT, "ro"), volume: (MOUNT_POINT, "rw")},
            doing=f"writing volume {volume} from its staged copy",
        )

    def remove(self) -> None:
        for stage in self.created:
            stack_control.remove_volume(self.client, stage)
        self.created.clear()


@contextmanager
def staging(client: Client, *, project: str) -> Iterator[Stages]:
    """A restore's staging volumes, removed however it ends."""
    stages = Stages(client, project)
    try:
        yield stages
    finally:
        stages.remove()
