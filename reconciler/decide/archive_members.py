"""Which members of a volume archive may reach the engine, and in what form (pure).

A volume archive comes from the backup store, which whoever holds its
credentials (or a developer PC that writes the ``dev/`` prefix) can write.
Docker's archive API unpacks it as root into a volume that services then run
from, so before a byte of it is written:

- every member is screened (``screen``) over the whole archive, in the
  verification step of a restore: an absolute name, a ``..`` component, a
  symbolic or hard link that leads out of the volume (an absolute target
  included: in the container it names the container's files, not the
  volume's), a device node, a fifo or any other special file refuses the
  archive. Refused, not dropped: a restore never writes something other than
  what was backed up without saying so; the archive's size beyond what its
  manifest declares is refused too, so nothing unbounded is decompressed;
- on its way to the engine (``sanitized``) each member is rewritten with its
  setuid and setgid bits cleared (a planted set-uid binary in the site volume
  would run as root in the web container), its file capabilities dropped,
  and checked again; the sticky bit, which only restricts, stays.

Only the standard library's ``tarfile`` is used, in its streaming modes:
memory stays at one block, whatever the size of the archive or of a file.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, cast

from reconciler.errors import ArchiveRefused

BLOCK = tarfile.BLOCKSIZE
CHUNK = 1024 * 1024
DROPPED_MODE_BITS = stat.S_ISUID | stat.S_ISGID
CAPABILITY_XATTR = "SCHILY.xattr.security.capability"
# tar has no type for a socket; restic's listing has. Not "S", tar's sparse
# file, which ``isreg`` counts as a regular file.
SOCKET_TYPE = b"s"


@dataclass(frozen=True)
class ArchiveSummary:
    members: int
    bytes: int  # uncompressed archive bytes read
    setid_members: int  # members whose setuid/setgid bits will be cleared


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be unpacked into a volume, or None when it may."""
    name = member.name
    if name.startswith("/"):
        return "an absolute path"
    if ".." in name.split("/"):
        return "a '..' component"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        kind = (
            "a device node"
            if member.ischr() or member.isblk()
            else "a fifo"
            if member.isfifo()
            else "a socket"
            if member.type == SOCKET_TYPE
            else f"an entry of tar type {member.type!r}"
        )
        return f"{kind}: only files, folders and links are restored"
    if member.issparse():
        # Written back as a regular file its header would still say sparse;
        # Docker's archives never hold one.
        return "a sparse file: only files, folders and links are restored"
    if member.issym():
        target = member.linkname
        if target.startswith("/"):
            return f"a symbolic link to the absolute path {target!r}, outside the volume"
        if not _link_stays_inside(posixpath.dirname(_relative(name)), target):
            return f"a symbolic link to {target!r}, which leads out of the volume"
    if member.islnk():
        target = member.linkname
        if target.startswith("/") or ".." in target.split("/"):
            return f"a hard link to {target!r}, which leads out of the volume"
    return None


def _link_stays_inside(folder: str, target: str) -> bool:
    """Whether a symlink in ``folder`` to the relative ``target`` stays in the volume.

    ``..`` may only lead the target: after a name it is taken from wherever
    that name points (with ``l -> .``, ``l/../etc`` is the volume's parent's
    ``etc``, though it normalises to ``etc``), which is not known while
    streaming. Leading ``..`` climb real folders (a member under a symlink of
    the archive is refused, ``_Judge``), so counting them against the link's
    depth is exact; the names after them go down from a folder inside, past
    symlinks that were each checked the same way.
    """
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ".." in parts[ups:]:
        return False
    depth = 0 if folder in ("", ".") else len(folder.split("/"))
    return ups <= depth


class _Judge:
    """``member_problem`` plus what only the members before tell (one per archive read).

    A member whose folder is a symlink of the archive is written where the
    link points, not where its name says; a hard link may only name a regular
    file the archive already held (tar and Docker always write it first).
    """

    def __init__(self) -> None:
        self._links: set[str] = set()
        self._files: set[str] = set()

    def problem(self, member: tarfile.TarInfo) -> str | None:
        problem = member_problem(member)
        if problem:
            return problem
        name = _relative(member.name)
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in self._links:
                return f"under {folder!r}, a symbolic link of the archive"
        if name == "." and not member.isdir():
            return "the volume's root, which must be a folder"
        if member.islnk() and _relative(member.linkname) not in self._files:
            return f"a hard link to {member.linkname[:200]!r}, which is no earlier file of it"
        if member.issym():
            self._links.add(name)
        else:
            self._links.discard(name)  # a folder or file of that name replaces a link
            if member.isreg():
                self._files.add(name)
        return None


def _relative(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") or "."


def within(name: str, paths: tuple[str, ...] | None) -> bool:
    """Whether the member ``name`` is one of ``paths`` (normalised) or inside one; all when None."""
    if paths is None:
        return True
    relative = _relative(name)
    return any(relative == path or relative.startswith(path + "/") for path in paths)


def screen(
    chunks: Iterable[bytes],
    *,
    what: str,
    max_bytes: int | None = None,
    paths: tuple[str, ...] | None = None,
) -> ArchiveSummary:
    """Read the whole archive; raise ``ArchiveRefused`` at its first bad member.

    ``max_bytes``: what the manifest says the archive holds; reading more is
    refused (a decompression bomb, or an archive that is not the one described).
    ``paths`` (a partial restore): each must be in the archive, and a hard
    link among them must point to a file that is among them too.
    """
    source = _BoundedReader(chunks, max_bytes=max_bytes, what=what)
    members = setid = 0
    chosen: set[str] = set()
    judge = _Judge()
    try:
        with tarfile.open(fileobj=cast(IO[bytes], source), mode="r|") as archive:
            for member in archive:
                problem = judge.problem(member)
                if problem:
                    raise ArchiveRefused(f"{what}: member {member.name[:200]!r} is {problem}")
                members += 1
                setid += bool(member.mode & DROPPED_MODE_BITS)
                if paths is not None and within(member.name, paths):
                    if member.islnk() and _relative(member.linkname) not in chosen:
                        raise ArchiveRefused(
                            f"{what}: {member.name[:200]!r} is a hard link to "
                            f"{member.linkname[:200]!r}, which is not among the paths to "
                            "restore; add it to paths"
                        )
                    chosen.add(_relative(member.name))
        source.drain()
    except tarfile.TarError as exc:
        raise ArchiveRefused(f"{what}: not a readable tar archive: {exc}") from exc
    for path in paths or ():
        if not any(name == path or name.startswith(path + "/") for name in chosen):
            raise ArchiveRefused(f"{what}: the backup holds no {path!r}; nothing is restored")
    return ArchiveSummary(members=members, bytes=source.total, setid_members=setid)


class NodeScreen:
    """``screen`` for a tree met node by node: a restic snapshot, before restic writes it.

    A restic restore writes into a staging volume, not through the archive
    API, so its members are judged from the snapshot's listing (``add``, in
    the listing's order: a folder before what it holds) and, once staged,
    from the link targets the listing does not show (``check_link``). The
    rules are ``screen``'s; a name met twice is refused too (restic would
    write the second through the first, a link or a folder alike).
    """

    def __init__(
        self, *, what: str, max_bytes: int | None = None, paths: tuple[str, ...] | None = None
    ) -> None:
        self.what = what
        self.max_bytes = max_bytes
        self.paths = paths
        self.members = 0
        self.bytes = 0
        self.setid_members = 0
        self._judge = _Judge()
        self._seen: set[str] = set()
        self._chosen: set[str] = set()

    def add(self, member: tarfile.TarInfo, *, own_name: str | None = None) -> None:
        """Judge one node; raise ``ArchiveRefused`` when it must never be written.

        ``own_name``: the node's name as its tree stores it, which must be the
        last part of its path (a name holding a slash, or ``..``, is written
        somewhere else than the listing shows).
        """
        name = _relative(member.name)
        if own_name is not None and name != "." and own_name != posixpath.basename(name):
            raise ArchiveRefused(
                f"{self.what}: member {member.name[:200]!r} is stored as {own_name[:200]!r}, "
                "a name that is not its own"
            )
        if name in self._seen:
            raise ArchiveRefused(f"{self.what}: member {member.name[:200]!r} is met twice")
        problem = self._judge.problem(member)
        if problem:
            raise ArchiveRefused(f"{self.what}: member {member.name[:200]!r} is {problem}")
        self._seen.add(name)
        self.members += 1
        self.bytes += member.size if member.isreg() else 0
        self.setid_members += bool(member.mode & DROPPED_MODE_BITS)
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            raise ArchiveRefused(
                f"{self.what}: holds more than the {self.max_bytes} bytes its manifest declares"
            )
        if self.paths is not None and within(member.name, self.paths):
            self._chosen.add(name)

    def check_link(self, name: str, target: str) -> None:
        """Judge a staged symbolic link ``name`` (relative to the volume) and its ``target``."""
        member = tarfile.TarInfo("./" + _relative(name))
        member.type, member.linkname = tarfile.SYMTYPE, target
        if _relative(name) not in self._seen:
            raise ArchiveRefused(f"{self.what}: {name[:200]!r} was staged but is not in the backup")
        problem = member_problem(member)
        if problem:
            raise ArchiveRefused(f"{self.what}: member {member.name[:200]!r} is {problem}")

    def finish(self) -> ArchiveSummary:
        """After the last node: the paths of a partial restore must each be there."""
        if "." not in self._seen:
            raise ArchiveRefused(f"{self.what}: the backup holds no folder of the volume")
        for path in self.paths or ():
            if not any(n == path or n.startswith(path + "/") for n in self._chosen):
                raise ArchiveRefused(
                    f"{self.what}: the backup holds no {path!r}; nothing is restored"
                )
        return ArchiveSummary(
            members=self.members, bytes=self.bytes, setid_members=self.setid_members
        )


def sanitized(
    chunks: Iterable[bytes], *, what: str, paths: tuple[str, ...] | None = None
) -> Iterator[bytes]:
    """The archive again, member by member, setuid/setgid cleared, every member checked.

    With ``paths``, only the members that are those paths or inside them.
    """
    source = _BoundedReader(chunks, max_bytes=None, what=what)
    judge = _Judge()
    try:
        with tarfile.open(fileobj=cast(IO[bytes], source), mode="r|") as archive:
            for member in archive:
                problem = judge.problem(member)
                if problem:
                    raise ArchiveRefused(f"{what}: member {member.name[:200]!r} is {problem}")
                if not within(member.name, paths):
                    continue  # tarfile skips its data when the next member is read
                member.mode &= ~DROPPED_MODE_BITS
                # File capabilities are set-uid by other means (cap_setuid on a
                # planted binary): the xattr that carries them is dropped too.
                member.pax_headers = {
                    k: v for k, v in member.pax_headers.items() if k != CAPABILITY_XATTR
                }
                yield member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                if member.isreg() and member.size:
                    data = archive.extractfile(member)
                    assert data is not None  # a regular file always has data
                    left = member.size
                    while left:
                        block = data.read(min(CHUNK, left))
                        if not block:
                            raise ArchiveRefused(f"{what}: {member.name[:200]!r} is cut short")
                        left -= len(block)
                        yield block
                    if member.size % BLOCK:
                        yield bytes(BLOCK - member.size % BLOCK)
        # Read to the end: a stream read again from the store is hashed again
        # as it ends (restore_artifacts.decompressed), which needs every byte.
        source.drain()
    except tarfile.TarError as exc:
        raise ArchiveRefused(f"{what}: not a readable tar archive: {exc}") from exc
    yield bytes(2 * BLOCK)  # the end of the archive


class _BoundedReader:
    """Chunks as a readable file that refuses to give more than ``max_bytes``."""

    def __init__(self, chunks: Iterable[bytes], *, max_bytes: int | None, what: str) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._offset = 0
        self.total = 0
        self._max = max_bytes
        self._what = what

    def _next(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.total += len(chunk)
        if self._max is not None and self.total > self._max:
            raise ArchiveRefused(
                f"{self._what}: holds more than the {self._max} bytes its manifest declares"
            )
        self._chunk, self._offset = chunk, 0
        return True

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self._offset >= len(self._chunk) and not self._next():
                break
            end = len(self._chunk) if size < 0 else self._offset + size - len(out)
            piece = self._chunk[self._offset : end]
            out += piece
            self._offset += len(piece)
        return bytes(out)

    def drain(self) -> None:
        while self._next():
            pass
