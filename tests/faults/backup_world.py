"""The backup/restore stack of the fault cases: a busybox site and a tiny MariaDB, to S3.

``backup.yaml`` backs up the ``site`` volume and the ``db`` database to
``${BACKUP_TARGET}`` (a bucket on moto's server, maybe through the fault proxy).
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import boto3
import docker
import zstandard

from reconciler import labels
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


def archive_names(endpoint: str, bucket: str, key: str) -> set[str]:
    """The file names in a stored volume archive (``.tar.zst``)."""
    body = s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        return {name.removeprefix("./") for name in archive.getnames()}


def volume_files(client: docker.DockerClient, volume: str) -> set[str]:
    from pathlib import Path

    root = Path(client.api.inspect_volume(volume)["Mountpoint"])
    return {p.name for p in root.iterdir()}
