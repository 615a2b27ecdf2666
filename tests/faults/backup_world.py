"""The backup/restore stack of the fault cases: a busybox site and a tiny MariaDB, to S3.

``backup.yaml`` backs up the ``site`` volume and the ``db`` database to
``${BACKUP_TARGET}`` (a bucket on moto's server, maybe through the fault proxy).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import docker

from reconciler import labels
from reconciler.adapters.restic_helper import volume_path
from reconciler.backup.backup_target import open_target
from reconciler.backup.stored_backups import read_manifest
from tests.faults.world import World, compose, db_service, web_service
from tests.fixtures.s3_server import FAKE_KEY, FAKE_SECRET, REGION
from tests.integration.backup_stack import run_sql, wait_healthy

# stop_services: a backup killed while web is stopped must not leave it stopped.
BACKUP_YAML = """\
target: ${BACKUP_TARGET}
volumes: [{name: site, stop_services: true}]
databases: [db]
"""
SERVICES = ("web", "db")
COUNT = "SELECT COUNT(*) FROM shop.orders;"


def stack_compose() -> str:
    return compose(
        {"web": web_service(version="1", volumes={"site": "/data"}), "db": db_service()},
        ["site", "dbdata"],
    )


def restore_yaml(requests: list[dict[str, Any]]) -> str:
    return json.dumps({"restores": requests})


def start(world: World) -> None:
    """The stack applied, a few files in the site, a table of five rows."""
    world.commit(
        {
            "compose.yaml": stack_compose(),
            "backup.yaml": BACKUP_YAML,
            "restore.yaml": "restores: []\n",
        }
    )
    world.sync()
    site = world.client.api.inspect_volume(world.volume("site"))["Mountpoint"]
    for number in range(5):
        with open(f"{site}/file{number}.txt", "w") as handle:
            handle.write(f"content {number}\n")
    db = db_container(world)
    wait_healthy(db)
    run_sql(
        db,
        "CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, item VARCHAR(64));"
        "INSERT INTO shop.orders (item) VALUES ('a'),('b'),('c'),('d'),('e');",
    )


def db_container(world: World) -> Any:
    return world.client.containers.get(labels.container_name(world.project, "db"))


def rows(world: World) -> int:
    db = db_container(world)
    wait_healthy(db)
    return int(run_sql(db, COUNT).strip())


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_SECRET, region_name=REGION
    ).client("s3", endpoint_url=endpoint)


def copy_names(world: World, source: str, backup: str, volume: str = "site") -> set[str]:
    """The paths, relative to the volume, that ``backup`` of ``source`` holds of ``volume``."""
    target = open_target(source, world.cli.env)
    artifact = next(
        a for a in read_manifest(target, backup).artifacts if (a.kind, a.name) == ("volume", volume)
    )
    root = volume_path(volume)
    names: set[str] = set()
    target.repository().ls(
        artifact.snapshot,
        root,
        lambda node: names.add(str(node.get("path", "")).removeprefix(f"{root}/")),
    )
    return names


def volume_files(client: docker.DockerClient, volume: str) -> set[str]:
    from pathlib import Path

    root = Path(client.api.inspect_volume(volume)["Mountpoint"])
    return {p.name for p in root.iterdir()}
