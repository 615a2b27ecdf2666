"""Volume archives from the store are judged member by member before the engine sees them."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator

import pytest

from reconciler.decide.archive_members import sanitized, screen
from reconciler.errors import ArchiveRefused


def member(
    name: str, kind: bytes = tarfile.REGTYPE, **fields: object
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    data = b""
    for key, value in fields.items():
        if key == "data":
            data = bytes(value)  # type: ignore[call-overload]
        else:
            setattr(info, key, value)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def archive(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def chunks(raw: bytes, size: int = 7000) -> Iterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


GOOD = archive(
    member("./", tarfile.DIRTYPE, mode=0o755),
    member("./html", tarfile.DIRTYPE, mode=0o755, uid=33, gid=33),
    member("./html/index.php", data=b"<?php echo 1;", mode=0o644, uid=33, gid=33, mtime=1577836800),
    member("./uploads/photo.jpg", data=bytes(range(256)) * 4000, mode=0o600),
    member("./uploads/link-to-index", tarfile.SYMTYPE, linkname="../html/index.php"),
    member("./dangling", tarfile.SYMTYPE, linkname="nowhere"),
    member("./html/same", tarfile.LNKTYPE, linkname="./html/index.php"),
    member("./tmp", tarfile.DIRTYPE, mode=0o1777),
    member("./" + "long-name/" * 30 + "file.txt", data=b"deep"),
)


def read_back(raw: bytes) -> list[tuple[str, int, int, str, bytes | None]]:
    found = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
            found.append((info.name, info.mode, info.uid, info.linkname, data))
    return found


def test_a_normal_tree_passes_unchanged() -> None:
    summary = screen(chunks(GOOD), what="volume site", max_bytes=len(GOOD))
    assert summary.members == 9
    assert summary.setid_members == 0
    assert read_back(b"".join(sanitized(chunks(GOOD), what="volume site"))) == read_back(GOOD)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (member("/etc/cron.d/x", data=b"* * * * * root sh"), "an absolute path"),
        (member("./../outside", data=b"x"), "a '..' component"),
        (member("./html/../../x", data=b"x"), "a '..' component"),
        (member("./etc", tarfile.SYMTYPE, linkname="/etc"), "the absolute path '/etc'"),
        (member("./up", tarfile.SYMTYPE, linkname="../../.."), "leads out of the volume"),
        (member("./a/b", tarfile.SYMTYPE, linkname="../../x"), "leads out of the volume"),
        (member("./hard", tarfile.LNKTYPE, linkname="/etc/shadow"), "a hard link to '/etc/shadow'"),
        (member("./hard", tarfile.LNKTYPE, linkname="../x"), "a hard link to '../x'"),
        (member("./null", tarfile.CHRTYPE, devmajor=1, devminor=3), "a device node"),
        (member("./disk", tarfile.BLKTYPE, devmajor=8, devminor=0), "a device node"),
        (member("./pipe", tarfile.FIFOTYPE), "a fifo"),
    ],
)
def test_a_hostile_member_refuses_the_archive(
    bad: tuple[tarfile.TarInfo, bytes], reason: str
) -> None:
    raw = archive(member("./ok", data=b"fine"), bad)
    with pytest.raises(ArchiveRefused, match="volume site: member") as caught:
        screen(chunks(raw), what="volume site")
    assert reason in str(caught.value)
    with pytest.raises(ArchiveRefused):
        b"".join(sanitized(chunks(raw), what="volume site"))


def test_setuid_and_setgid_are_cleared_and_the_sticky_bit_kept() -> None:
    raw = archive(
        member("./bin/su", data=b"\x7fELF", mode=0o4755),
        member("./shared", tarfile.DIRTYPE, mode=0o2775),
        member("./tmp", tarfile.DIRTYPE, mode=0o1777),
    )
    assert screen(chunks(raw), what="volume site").setid_members == 2
    modes = {name: mode for name, mode, *_ in read_back(b"".join(sanitized(chunks(raw), what="v")))}
    assert modes == {"./bin/su": 0o755, "./shared": 0o775, "./tmp": 0o1777}


def test_more_than_the_manifest_declares_is_refused() -> None:
    with pytest.raises(ArchiveRefused, match="more than the 10000 bytes its manifest declares"):
        screen(chunks(GOOD), what="volume site", max_bytes=10_000)


def test_what_is_not_a_tar_is_refused() -> None:
    with pytest.raises(ArchiveRefused, match="not a readable tar archive"):
        screen([b"<html>not a tar</html>" * 100], what="volume site")


def test_only_the_paths_asked_for_are_unpacked() -> None:
    paths = ("uploads", "html/index.php")
    summary = screen(chunks(GOOD), what="volume site", paths=paths)
    assert summary.members == 9
    names = [
        name for name, *_ in read_back(b"".join(sanitized(chunks(GOOD), what="v", paths=paths)))
    ]
    assert names == ["./html/index.php", "./uploads/photo.jpg", "./uploads/link-to-index"]


def test_a_path_the_backup_does_not_hold_is_refused() -> None:
    with pytest.raises(ArchiveRefused, match="the backup holds no 'uploads/2027'"):
        screen(chunks(GOOD), what="volume site", paths=("uploads/2027",))
    with pytest.raises(ArchiveRefused, match="the backup holds no 'html/index'"):
        screen(chunks(GOOD), what="volume site", paths=("html/index",))  # no prefix matching


def test_a_hard_link_to_a_file_left_out_is_refused() -> None:
    with pytest.raises(ArchiveRefused, match="which is not among the paths to restore"):
        screen(chunks(GOOD), what="volume site", paths=("html/same",))


def test_file_capabilities_are_dropped_and_other_xattrs_kept() -> None:
    info, data = member("./bin/ping", data=b"\x7fELF", mode=0o755)
    info.pax_headers = {
        "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
        "SCHILY.xattr.user.note": "kept",
    }
    out = b"".join(sanitized(chunks(archive((info, data))), what="v"))
    with tarfile.open(fileobj=io.BytesIO(out), mode="r:") as tar:
        (found,) = tar.getmembers()
    assert "SCHILY.xattr.security.capability" not in found.pax_headers
    assert found.pax_headers["SCHILY.xattr.user.note"] == "kept"


@pytest.mark.parametrize(
    ("members", "refusal"),
    [
        (  # "l -> ." makes "l/.." the volume's parent, though "l/../etc" normalises to "etc"
            [
                member("./l", tarfile.SYMTYPE, linkname="."),
                member("./x", tarfile.SYMTYPE, linkname="l/../etc/passwd"),
            ],
            "'./x' is a symbolic link to 'l/../etc/passwd', which leads out",
        ),
        (
            [member("./a", tarfile.SYMTYPE, linkname="../../..")],
            "'./a' is a symbolic link to '../../..', which leads out",
        ),
        (  # a file under a symlink of the archive is written where the link points
            [
                member("./l", tarfile.SYMTYPE, linkname="html"),
                member("./l/x", data=b"x"),
            ],
            "'./l/x' is under 'l', a symbolic link of the archive",
        ),
        (
            [member("./ghost", tarfile.LNKTYPE, linkname="./etc/shadow")],
            "'./ghost' is a hard link to './etc/shadow', which is no earlier file",
        ),
        ([member(".", tarfile.SYMTYPE, linkname="html")], "the volume's root, which must be"),
        ([member("./s", tarfile.GNUTYPE_SPARSE)], "'./s' is a sparse file"),
    ],
)
def test_links_that_only_the_members_before_tell_lead_out_are_refused(
    members: list[tuple[tarfile.TarInfo, bytes]], refusal: str
) -> None:
    raw = archive(member("./html", tarfile.DIRTYPE), *members)
    for judged in (
        lambda: screen(chunks(raw), what="volume site"),
        lambda: b"".join(sanitized(chunks(raw), what="volume site")),
    ):
        with pytest.raises(ArchiveRefused, match=re.escape(refusal)):
            judged()


def test_sanitized_reads_its_input_to_the_end() -> None:
    """What follows the tar's end is read too: a re-read stream is hashed as it ends."""
    raw = archive(member("./a", data=b"a" * 100_000))
    pulled: list[int] = []

    def source() -> Iterator[bytes]:
        for piece in chunks(raw + bytes(8192), 10_240):
            pulled.append(len(piece))
            yield piece

    out = sanitized(source(), what="v")
    next(out)
    assert sum(pulled) < len(raw)  # it streams: the header comes before the rest is read
    b"".join(out)
    assert sum(pulled) == len(raw) + 8192
