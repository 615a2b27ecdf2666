"""The restore engine against the real parts: Docker, a MariaDB container, a file target, S3."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler import labels
from reconciler.adapters.object_store import S3Store, open_store
from reconciler.backup.backing_up import run_backup
from reconciler.backup.backup_target import open_target
from reconciler.backup.stored_backups import list_backups
from reconciler.errors import RestoreFailed
from reconciler.restore.restoring import RestoreContext, RestoreOptions, resolve_backup, run_restore
from tests.conftest import TEST_HELPER_IMAGE
from tests.fixtures.docker_engine import remove_project
from tests.fixtures.legacy_backups import write_legacy_backup
from tests.fixtures.restic_planting import (
    flip_packs,
    newer_id,
    plant_backup,
    plant_volume,
    repository,
)
from tests.integration.backup_stack import Stack, listing, policy, run_sql, start_stack

pytestmark = pytest.mark.integration

ROWS = "SELECT COUNT(*) FROM shop.orders; SELECT COUNT(*) FROM shop.customers;"


@pytest.fixture(scope="module")
def stack(docker_client: docker.DockerClient) -> Iterator[Stack]:
    project = "rs" + uuid.uuid4().hex[:8]
    try:
        yield start_stack(docker_client, project)
    finally:
        remove_project(docker_client, project)


def context(stack: Stack, tmp_path: Path, target: str, **fields: Any) -> RestoreContext:
    fields.setdefault("environ", os.environ)
    return RestoreContext(
        client=stack.client,
        desired=stack.desired,
        state_dir=tmp_path / "state",
        default_source=target,
        safety_target=target,
        **fields,
    )


def backup(stack: Stack, target: str, state: Path, **options: Any) -> Any:
    """A backup by the reconciler's pipeline (restic)."""
    return run_backup(
        client=stack.client,
        target=open_target(target, os.environ, state_dir=state),
        desired=stack.desired,
        policy=policy(target, **options),
        state_dir=state,
        helper_image=TEST_HELPER_IMAGE,
    )


def legacy_backup(stack: Stack, target: str, **options: Any) -> Any:
    """A backup in the old format (1), as one left from before restic was the engine."""
    return write_legacy_backup(
        client=stack.client,
        store=open_store(target),
        desired=stack.desired,
        policy=policy(target, **options),
        image=TEST_HELPER_IMAGE,
    )


def vandalise(stack: Stack) -> None:
    web = stack.container("web")
    result = web.exec_run(
        ["sh", "-c", "rm -rf /data/html && echo new > /data/not-in-backup && mkdir /data/newdir"]
    )
    assert result.exit_code == 0
    run_sql(stack.container("db"), "DELETE FROM shop.orders; CREATE DATABASE junk;")


def test_restore_from_a_file_target_is_exact(stack: Stack, tmp_path: Path) -> None:
    target = f"file://{tmp_path / 'backups'}"
    before_files = listing(stack.client, f"{stack.project}_site")
    before_rows = run_sql(stack.container("db"), ROWS)
    backup(stack, target, tmp_path / "state")
    vandalise(stack)
    vandalised = listing(stack.client, f"{stack.project}_site")
    recorded: dict[str, Any] = {}
    report = run_restore(
        "r1", RestoreOptions(), context(stack, tmp_path, target, record=recorded.update)
    )
    assert listing(stack.client, f"{stack.project}_site") == before_files
    assert run_sql(stack.container("db"), ROWS) == before_rows
    assert "junk" not in run_sql(stack.container("db"), "SHOW DATABASES")
    assert stack.running() == {"web": "running", "db": "running"}
    assert report.safety_copy == f"{target}/pre-restore/r1"
    assert recorded["safety_copy"] == report.safety_copy
    assert recorded["backup"] == report.backup
    # The safety copy is a backup like any other: restoring it undoes the restore.
    safety = open_target(report.safety_copy, os.environ)
    assert resolve_backup(safety, "latest").id == report.safety_copy_backup
    # It is in the target's own repository, where it is never a backup of the target.
    assert not (tmp_path / "backups" / "pre-restore").exists()
    assert report.safety_copy_backup not in {
        b.id for b in list_backups(open_target(target, os.environ))
    }
    run_restore(
        "undo-r1",
        RestoreOptions(source=report.safety_copy, databases=()),
        context(stack, tmp_path, target),
    )
    assert listing(stack.client, f"{stack.project}_site") == vandalised


def test_no_image_to_read_volumes_with_refuses_before_anything_stops(
    stack: Stack, tmp_path: Path
) -> None:
    """The safety copy reads volumes with restic: no such image is a refusal up front."""
    target = f"file://{tmp_path / 'backups'}"
    backup(stack, target, tmp_path / "state")
    started = {name: stack.container(name).attrs["State"]["StartedAt"] for name in ("web", "db")}
    without = {k: v for k, v in os.environ.items() if k != "RECONCILER_HELPER_IMAGE"}
    with pytest.raises(RestoreFailed) as caught:
        run_restore(
            "no-helper", RestoreOptions(), context(stack, tmp_path, target, environ=without)
        )
    assert "no image with restic to read it with" in str(caught.value)
    assert "nothing was overwritten" in str(caught.value)
    assert caught.value.touched is False
    # Neither service was stopped (and started again) for it.
    assert {
        name: stack.container(name).attrs["State"]["StartedAt"] for name in ("web", "db")
    } == started


def test_tampered_object_is_refused_and_nothing_is_touched(
    stack: Stack, tmp_path: Path, s3_bucket: str
) -> None:
    store = S3Store(s3_bucket, "prod", max_attempts=2)
    backup(stack, store.url, tmp_path / "state")
    assert flip_packs(s3_bucket, "prod") > 0
    stack.container("web").exec_run(["sh", "-c", "echo marker > /data/marker"])
    before = listing(stack.client, f"{stack.project}_site")
    with pytest.raises(RestoreFailed) as caught:
        run_restore("r2", RestoreOptions(), context(stack, tmp_path, store.url))
    assert "does not read back" in str(caught.value)
    assert "nothing was overwritten" in str(caught.value)
    assert caught.value.touched is False
    assert listing(stack.client, f"{stack.project}_site") == before
    assert list_backups(open_target(f"{store.url}/pre-restore/r2", os.environ)) == []


def test_a_volume_whose_data_does_not_authenticate_is_refused_while_staged(
    stack: Stack, tmp_path: Path
) -> None:
    """Only the volume's own data is damaged: restic's restore into the staging volume fails."""
    target = f"file://{tmp_path / 'backups'}"
    data = tmp_path / "backups" / "data"
    backup(stack, target, tmp_path / "state")
    packs = set(data.rglob("*"))
    assert (
        stack.container("web")
        .exec_run(["sh", "-c", "head -c 3000000 /dev/urandom > /data/new-photo.jpg"])
        .exit_code
        == 0
    )
    backup(stack, target, tmp_path / "state")
    # The new photo's blobs are the largest new pack (the dump is unchanged,
    # the manifest is a small pack of its own).
    new = max(
        (p for p in set(data.rglob("*")) - packs if p.is_file()), key=lambda p: p.stat().st_size
    )
    body = bytearray(new.read_bytes())
    body[len(body) // 2] ^= 0xFF
    new.chmod(0o600)
    new.write_bytes(bytes(body))
    before = listing(stack.client, f"{stack.project}_site")
    with pytest.raises(RestoreFailed) as caught:
        run_restore("r-damaged", RestoreOptions(), context(stack, tmp_path, target))
    assert "volume site: does not read back" in str(caught.value)
    assert "nothing was overwritten" in str(caught.value)
    assert listing(stack.client, f"{stack.project}_site") == before
    assert stack.running() == {"web": "running", "db": "running"}
    helpers = stack.client.api.volumes(
        filters={"label": [f"{labels.PROJECT}={stack.project}", labels.HELPER]}
    )
    assert [v["Name"] for v in helpers.get("Volumes") or []] == []  # the staging volume went


@pytest.mark.parametrize(
    ("field", "value", "refusal"),
    [
        ("id", "a/../..", "id: 'a/../..' is not an allowed value"),
        ("id", "2026-01-01T00-00-00Z", "names the id 2026-01-01T00-00-00Z"),
        ("name", "../../..", "name: '../../..' is not an allowed value"),
        ("key", "../../../etc/passwd", "key: '../../../etc/passwd' is not"),
    ],
)
def test_a_planted_manifest_names_nothing_on_disk(
    stack: Stack, tmp_path: Path, field: str, value: str, refusal: str
) -> None:
    """Issue 10: a manifest with id ``a/../..`` made the second drill delete the state folder."""
    import json

    from reconciler.restore.restore_drill import run_drill

    work = tmp_path / "work"
    target = f"file://{work / 'backups'}"
    store = open_store(target)
    state = work / "state"
    ident = legacy_backup(stack, target).id
    state.mkdir(parents=True)
    (state / "backup-status.json").write_text("{}")  # a state file the drill must not delete
    planted = json.loads(b"".join(store.get_stream(f"{ident}/manifest.json")))
    if field == "id":  # an attacker keeps the keys consistent with the id
        planted["id"] = value
        for artifact in planted["artifacts"]:
            artifact["key"] = artifact["key"].replace(ident, value)
    else:
        planted["artifacts"][0][field] = value
    store.put_bytes(f"{ident}/manifest.json", json.dumps(planted).encode())
    (work / "canary").write_text("still here")
    before = listing(stack.client, f"{stack.project}_site")
    for _ in range(2):  # the second drill is the one that deleted the folder
        drill = run_drill(
            client=stack.client,
            target=open_target(target, os.environ),
            desired=stack.desired,
            state_dir=state,
        )
        assert drill["result"] == "failed"
        assert refusal in drill["error"]
        assert (work / "canary").read_text() == "still here"
        assert (state / "backup-status.json").exists()
    with pytest.raises(RestoreFailed, match="refused") as caught:
        run_restore("planted", RestoreOptions(), context(stack, tmp_path, target))
    assert refusal in str(caught.value)
    assert caught.value.touched is False
    assert listing(stack.client, f"{stack.project}_site") == before
    assert (work / "canary").read_text() == "still here"


@pytest.mark.parametrize(
    ("field", "value", "refusal"),
    [
        ("id", "a/../..", "id: 'a/../..' is not an allowed value"),
        ("id", "2026-01-01T00-00-00Z", "names the id 2026-01-01T00-00-00Z"),
        ("name", "../../..", "name: '../../..' is not an allowed value"),
        ("snapshot", "../../etc", "snapshot: '../../etc' is not an allowed value"),
    ],
)
def test_a_manifest_planted_with_the_key_names_nothing_on_disk(
    stack: Stack, tmp_path: Path, field: str, value: str, refusal: str
) -> None:
    """The same plants in a restic backup: whoever holds the key (a PC) can write one."""
    from reconciler.restore.restore_drill import run_drill

    work = tmp_path / "work"
    target = f"file://{work / 'backups'}"
    state = work / "state"
    ident = backup(stack, target, state).manifest.id

    def change(manifest: dict[str, Any]) -> dict[str, Any]:
        if field == "id":
            manifest["id"] = value
        else:
            manifest["artifacts"][0][field] = value
        return manifest

    planted = newer_id(ident)
    plant_backup(
        repository(target, os.environ), from_ident=ident, new_ident=planted, change_manifest=change
    )
    (work / "canary").write_text("still here")
    before = listing(stack.client, f"{stack.project}_site")
    for _ in range(2):
        drill = run_drill(
            client=stack.client,
            target=open_target(target, os.environ, state_dir=state),
            desired=stack.desired,
            state_dir=state,
        )
        assert drill["result"] == "failed"
        assert drill["backup"] is None  # refused before it was taken for one
        assert refusal in drill["error"], drill["error"]
        assert (work / "canary").read_text() == "still here"
        assert (state / "backup-status.json").exists()
    with pytest.raises(RestoreFailed, match="refused") as caught:
        run_restore("planted", RestoreOptions(), context(stack, tmp_path, target))
    assert refusal in str(caught.value)
    assert caught.value.touched is False
    assert listing(stack.client, f"{stack.project}_site") == before


@pytest.mark.parametrize(
    ("hostile", "refusal"),
    [
        ("symlink", "a symbolic link to the absolute path '/etc'"),
        ("dotdot", "a '..' component"),
        ("fifo", "a fifo"),
    ],
)
def test_a_planted_archive_is_refused_before_the_volume_changes(
    stack: Stack, tmp_path: Path, hostile: str, refusal: str
) -> None:
    """Issue 10: archive members are judged before they reach the engine; nothing is written."""
    import hashlib
    import io
    import json
    import tarfile

    import zstandard

    target = f"file://{tmp_path / 'backups'}"
    store = open_store(target)
    ident = legacy_backup(stack, target, with_db=False).id
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        page = tarfile.TarInfo("./index.html")
        body = b"<h1>defaced</h1>"
        page.size = len(body)
        tar.addfile(page, io.BytesIO(body))
        evil = tarfile.TarInfo({"symlink": "./etc", "dotdot": "./../x", "fifo": "./pipe"}[hostile])
        evil.type = {
            "symlink": tarfile.SYMTYPE,
            "dotdot": tarfile.REGTYPE,
            "fifo": tarfile.FIFOTYPE,
        }[hostile]
        evil.linkname = "/etc" if hostile == "symlink" else ""
        tar.addfile(evil, io.BytesIO(b"") if evil.isreg() else None)
    packed = zstandard.ZstdCompressor().compress(raw.getvalue())
    manifest = json.loads(b"".join(store.get_stream(f"{ident}/manifest.json")))
    (site,) = manifest["artifacts"]
    store.put_bytes(site["key"], packed)
    # Checksums recomputed: the store's writer can do that; the archive is judged anyway.
    site.update(
        size=len(packed), sha256=hashlib.sha256(packed).hexdigest(), raw_size=len(raw.getvalue())
    )
    store.put_bytes(f"{ident}/manifest.json", json.dumps(manifest).encode())
    before = listing(stack.client, f"{stack.project}_site")
    with pytest.raises(RestoreFailed) as caught:
        run_restore("planted-tar", RestoreOptions(databases=()), context(stack, tmp_path, target))
    assert refusal in str(caught.value)
    assert caught.value.touched is False
    assert listing(stack.client, f"{stack.project}_site") == before
    assert stack.running() == {"web": "running", "db": "running"}


# What whoever holds the key (a developer's PC) can make restic store as a
# volume: restic authenticates it, so only the restore's own screening stands
# between it and the live volume.
PLANTED_VOLUMES = {
    "symlink-out": (
        "mkdir html && echo ok > html/index.html && ln -s ../../../../etc/passwd html/passwd",
        "member './html/passwd' is a symbolic link to '../../../../etc/passwd'",
    ),
    "absolute-symlink": ("ln -s /etc etc", "a symbolic link to the absolute path '/etc'"),
    "fifo": ("mkfifo pipe", "a fifo"),
    "device": ("mknod null c 1 3", "a device node"),
}


def backup_then_plant_volume(stack: Stack, tmp_path: Path, fill: str) -> tuple[str, str]:
    """A real backup to a file target, then a newer one whose site volume ``fill`` made."""
    target = f"file://{tmp_path / 'backups'}"
    good = backup(stack, target, tmp_path / "state").manifest.id
    planted = newer_id(good)
    plant_volume(
        stack.client,
        target=target,
        environ=os.environ,
        project=stack.project,
        from_ident=good,
        new_ident=planted,
        fill=fill,
    )
    return target, planted


@pytest.mark.parametrize("case", sorted(PLANTED_VOLUMES))
def test_a_planted_restic_volume_is_refused_before_the_volume_changes(
    stack: Stack, tmp_path: Path, case: str
) -> None:
    fill, refusal = PLANTED_VOLUMES[case]
    target, planted = backup_then_plant_volume(stack, tmp_path, fill)
    before = listing(stack.client, f"{stack.project}_site")
    context_ = context(stack, tmp_path, target)
    assert resolve_backup(open_target(target, os.environ), "latest").id == planted
    with pytest.raises(RestoreFailed) as caught:
        run_restore("planted-restic", RestoreOptions(databases=()), context_)
    assert refusal in str(caught.value)
    assert f"backup {planted} volume site" in str(caught.value)
    assert caught.value.touched is False
    assert listing(stack.client, f"{stack.project}_site") == before
    assert list_backups(open_target(f"{target}/pre-restore/planted-restic", os.environ)) == []
    assert stack.running() == {"web": "running", "db": "running"}


def test_setuid_bits_of_a_planted_restic_volume_never_reach_the_volume(
    stack: Stack, tmp_path: Path
) -> None:
    target, planted = backup_then_plant_volume(
        stack,
        tmp_path,
        "echo '#!' > su && chmod 4755 su && echo '#!' > sg && chmod 2755 sg && "
        "echo x > plain && chmod 640 plain && mkdir tmp && chmod 1777 tmp",
    )
    report = run_restore(
        "setid-restic", RestoreOptions(databases=()), context(stack, tmp_path, target)
    )
    assert report.backup == planted
    modes = {
        line.split()[0]: line.split()[3]
        for line in listing(stack.client, f"{stack.project}_site").splitlines()
    }
    assert modes["./su"] == "755"
    assert modes["./sg"] == "755"
    assert modes["./plain"] == "640"
    assert modes["./tmp"] == "1777"


def test_setuid_and_setgid_bits_never_reach_the_volume(stack: Stack) -> None:
    import io
    import tarfile

    from reconciler import labels
    from reconciler.adapters import volume_archive

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in (("./su", 0o4755), ("./sg", 0o2755), ("./plain", 0o640)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 2, mode
            tar.addfile(info, io.BytesIO(b"#!"))
        shared = tarfile.TarInfo("./tmp")
        shared.type, shared.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(shared)
    volume = f"{stack.project}_setid"
    stack.client.volumes.create(volume, labels={labels.PROJECT: stack.project})
    volume_archive.write_volume(
        stack.client,
        volume=volume,
        image="reconciler-local/busybox:latest",
        project=stack.project,
        chunks=[raw.getvalue()],
    )
    modes = {
        line.split()[0]: line.split()[3] for line in listing(stack.client, volume).splitlines()
    }
    assert modes["./su"] == "755"
    assert modes["./sg"] == "755"
    assert modes["./plain"] == "640"
    assert modes["./tmp"] == "1777"


def test_a_partial_restore_brings_back_only_its_paths_exactly(stack: Stack, tmp_path: Path) -> None:
    """Issue 10 item 6: ``paths:`` brings back files or folders of one volume, the rest stays."""
    from tests.integration.backup_stack import POPULATE

    # Earlier tests of the module vandalise the shared stack: start from the known tree.
    reset = stack.container("web").exec_run(["sh", "-c", "rm -rf /data/* && " + POPULATE])
    assert reset.exit_code == 0, reset.output
    target = f"file://{tmp_path / 'backups'}"
    backup(stack, target, tmp_path / "state")
    backed_up = listing(stack.client, f"{stack.project}_site")
    web, db = stack.container("web"), stack.container("db")
    changed = web.exec_run(
        [
            "sh",
            "-c",
            "echo changed > /data/html/index.php && echo new > /data/uploads/new.txt"
            " && rm /data/uploads/2026/11/photo.jpg && echo kept > /data/html/css/site.css",
        ]
    )
    assert changed.exit_code == 0
    run_sql(db, "INSERT INTO shop.orders (item) VALUES ('after the backup')")
    rows = run_sql(db, ROWS)
    report = run_restore(
        "partial",
        RestoreOptions(volumes=("site",), paths=("uploads", "html/index.php")),
        context(stack, tmp_path, target),
    )
    now = listing(stack.client, f"{stack.project}_site")

    def lines(text: str, prefix: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith(prefix)]

    assert lines(now, "./uploads") == lines(backed_up, "./uploads")  # exact: new.txt is gone
    assert lines(now, "./html/index.php") == lines(backed_up, "./html/index.php")
    assert lines(now, "./html/css/site.css") != lines(backed_up, "./html/css/site.css")  # left
    assert run_sql(db, ROWS) == rows  # no database is loaded unless one is named
    assert report.plan.describe() == "volume site (uploads, html/index.php)"
    assert stack.running() == {"web": "running", "db": "running"}
