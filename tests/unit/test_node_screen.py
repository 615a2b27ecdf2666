"""The screening of a restic snapshot's nodes before and after restic stages them (pure)."""

from __future__ import annotations

import tarfile

import pytest

from reconciler.decide.archive_members import SOCKET_TYPE, NodeScreen
from reconciler.errors import ArchiveRefused
from reconciler.restore.volume_staging import MB, STAGE_HEADROOM, staging_room_problem


def node(
    name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, mode
    return info


TREE = [
    node(".", tarfile.DIRTYPE, mode=0o755),
    node("./html", tarfile.DIRTYPE, mode=0o755),
    node("./html/index.php", size=13),
    node("./html/link", tarfile.SYMTYPE),
    node("./su", size=2, mode=0o4755),
    node("./tmp", tarfile.DIRTYPE, mode=0o1777),
]


def screened(nodes: list[tarfile.TarInfo], **options: object) -> NodeScreen:
    screen = NodeScreen(what="backup b volume site", **options)  # type: ignore[arg-type]
    for one in nodes:
        screen.add(one, own_name=one.name.rsplit("/", 1)[-1])
    return screen


def test_a_normal_tree_passes_and_is_counted() -> None:
    summary = screened(TREE, max_bytes=15).finish()
    assert (summary.members, summary.bytes, summary.setid_members) == (6, 15, 1)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (node("./null", tarfile.CHRTYPE), "a device node"),
        (node("./disk", tarfile.BLKTYPE), "a device node"),
        (node("./pipe", tarfile.FIFOTYPE), "a fifo"),
        (node("./sock", SOCKET_TYPE), "a socket"),
        (node("./odd", b"?"), "an entry of tar type"),
        (node("./../up", size=1), "a '..' component"),
        (node("./html", size=1), "met twice"),
    ],
)
def test_a_hostile_node_is_refused_before_restic_writes(bad: tarfile.TarInfo, reason: str) -> None:
    with pytest.raises(ArchiveRefused, match="backup b volume site: member") as caught:
        screened([*TREE, bad])
    assert reason in str(caught.value)


def test_a_name_that_is_not_the_last_part_of_its_path_is_refused() -> None:
    screen = NodeScreen(what="volume site")
    screen.add(node(".", tarfile.DIRTYPE), own_name="site")
    with pytest.raises(ArchiveRefused, match="a name that is not its own"):
        screen.add(node("./a/b", size=1), own_name="a/b")


def test_more_bytes_than_the_manifest_declares_are_refused() -> None:
    with pytest.raises(ArchiveRefused, match="more than the 14 bytes"):
        screened(TREE, max_bytes=14)


def test_a_tree_without_the_volume_folder_is_refused() -> None:
    with pytest.raises(ArchiveRefused, match="no folder of the volume"):
        screened(TREE[1:]).finish()


def test_the_paths_of_a_partial_restore_must_be_there() -> None:
    assert screened(TREE, paths=("html",)).finish().members == 6
    with pytest.raises(ArchiveRefused, match="holds no 'uploads'"):
        screened(TREE, paths=("html", "uploads")).finish()


@pytest.mark.parametrize(
    ("name", "target", "reason"),
    [
        ("html/link", "/etc/passwd", "the absolute path '/etc/passwd'"),
        ("html/link", "../../etc/passwd", "leads out of the volume"),
        ("elsewhere", "index.php", "staged but is not in the backup"),
    ],
)
def test_a_staged_link_is_judged_with_its_target(name: str, target: str, reason: str) -> None:
    screen = screened(TREE)
    screen.check_link("html/link", "index.php")
    screen.check_link("html/link", "../su")
    with pytest.raises(ArchiveRefused) as caught:
        screen.check_link(name, target)
    assert reason in str(caught.value)


def test_staging_needs_room_for_the_staged_copy_and_the_copy_in() -> None:
    staged = 1000 * MB
    # The live volume holds as much: emptying it gives back what the copy in takes.
    assert (
        staging_room_problem(staged=staged, free=staged + STAGE_HEADROOM, live=staged, volume="v")
        is None
    )
    # An empty live volume: the copy in needs the room again.
    problem = staging_room_problem(staged=staged, free=staged + STAGE_HEADROOM, live=0, volume="v")
    assert problem is not None
    assert f"needs {(2 * staged + STAGE_HEADROOM) // MB} MB" in problem
    assert "nothing was touched" in problem
