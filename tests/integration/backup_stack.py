"""A small real stack for the backup tests: a web service with a site volume, a MariaDB service.

Built directly on the engine (not through the pass) so the backup tests need
nothing but Docker; everything carries the project label and is removed by
``remove_project``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import docker

from reconciler import labels
from reconciler.model.backup_policy import BackupPolicy, DatabaseBackup, VolumeBackup
from reconciler.model.desired import DesiredState, Mount, ServiceSpec, VolumeSpec

BUSYBOX = "reconciler-local/busybox:latest"
MARIADB = "reconciler-local/mariadb:local"
ROOT_PASSWORD = "s3cret-root"

# Files with owners, modes, a symlink (and a dangling one), old mtimes, empty
# folders, a binary file and a name with spaces: what a tar must keep.
POPULATE = r"""
set -e
cd /data
mkdir -p html/css uploads/2026/11 empty/nested-empty private
printf '<?php echo "hi"; ?>\n' > html/index.php
printf 'body { color: red }\n' > html/css/site.css
head -c 300000 /dev/urandom > uploads/2026/11/photo.jpg
printf 'secret\n' > private/key.txt
printf 'with spaces\n' > 'html/a file.txt'
ln -s ../html/index.php uploads/link-to-index
ln -s nowhere dangling
chown -R 33:33 html uploads
chown 999:998 private/key.txt
chmod 0600 private/key.txt
chmod 0750 private
chmod 1777 uploads/2026
touch -h -d '2020-01-02 03:04:05' html/index.php uploads/link-to-index
touch -d '2019-05-06 07:08:09' empty/nested-empty
"""

# One line per entry: path, owner, group, mode, type, mtime of files and links,
# link target, and a checksum of regular files. Folder mtimes change when the
# listing itself runs nothing, but Docker may touch the root; leave them out.
LISTING = r"""
cd /data
find . | sort | while IFS= read -r path; do
  if [ -L "$path" ]; then
    echo "$path $(stat -c '%u %g %a %Y' "$path") link $(readlink "$path")"
  elif [ -d "$path" ]; then
    echo "$path $(stat -c '%u %g %a' "$path") dir"
  else
    echo "$path $(stat -c '%u %g %a %Y' "$path") file $(md5sum < "$path" | cut -d' ' -f1)"
  fi
done
"""


@dataclass
class Stack:
    project: str
    desired: DesiredState
    client: docker.DockerClient

    def container(self, service: str) -> Any:
        return self.client.containers.get(labels.container_name(self.project, service))

    def running(self) -> dict[str, str]:
        found = {}
        for service in self.desired.services:
            container = self.container(service)
            container.reload()
            found[service] = container.status
        return found


def desired_state(project: str, *, with_db: bool = True) -> DesiredState:
    services = {
        "web": ServiceSpec(
            name="web",
            image=BUSYBOX,
            command=("sleep", "3600"),
            mounts=(Mount(type="volume", source=f"{project}_site", target="/data"),),
            # sleep ignores SIGTERM: do not wait 10 s each time it is stopped.
            stop_grace_period_s=1,
        )
    }
    volumes = {"site": VolumeSpec(key="site", name=f"{project}_site")}
    if with_db:
        services["db"] = ServiceSpec(
            name="db",
            image=MARIADB,
            environment={"MARIADB_ROOT_PASSWORD": ROOT_PASSWORD, "MARIADB_DATABASE": "shop"},
            mounts=(Mount(type="volume", source=f"{project}_dbdata", target="/var/lib/mysql"),),
        )
        volumes["dbdata"] = VolumeSpec(key="dbdata", name=f"{project}_dbdata")
    return DesiredState(project=project, services=services, networks={}, volumes=volumes)


def policy(
    target: str, *, stop_services: bool = False, with_db: bool = True, volumes: bool = True
) -> BackupPolicy:
    return BackupPolicy(
        target=target,
        volumes=(VolumeBackup(name="site", stop_services=stop_services),) if volumes else (),
        databases=(DatabaseBackup(service="db"),) if with_db else (),
    )


def start_stack(client: docker.DockerClient, project: str, *, with_db: bool = True) -> Stack:
    desired = desired_state(project, with_db=with_db)
    for volume in desired.volumes.values():
        client.volumes.create(volume.name, labels={labels.PROJECT: project})
    for service in desired.services.values():
        client.containers.run(
            service.image,
            command=list(service.command) if service.command else None,
            name=labels.container_name(project, service.name),
            detach=True,
            environment=service.environment,
            labels={labels.PROJECT: project, labels.SERVICE: service.name},
            volumes={m.source: {"bind": m.target, "mode": "rw"} for m in service.mounts},
        )
    stack = Stack(project, desired, client)
    web = stack.container("web")
    result = web.exec_run(["sh", "-c", POPULATE])
    assert result.exit_code == 0, result.output
    if with_db:
        wait_healthy(stack.container("db"))
        run_sql(
            stack.container("db"),
            "CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, item VARCHAR(64));"
            "INSERT INTO shop.orders (item) VALUES ('a'),('b'),('c'),('d'),('e');"
            "CREATE TABLE shop.customers (id INT PRIMARY KEY, name TEXT);"
            "INSERT INTO shop.customers VALUES (1,'ana'),(2,'ion');",
        )
    return stack


def wait_healthy(container: Any, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if container.exec_run(["healthcheck.sh"]).exit_code == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{container.name} not healthy after {timeout_s}s")


def run_sql(container: Any, sql: str) -> str:
    result = container.exec_run(
        ["mariadb", "--user=root", "--batch", "--skip-column-names", "-e", sql],
        environment={"MYSQL_PWD": ROOT_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    return str(result.output.decode())


def listing(client: docker.DockerClient, volume: str) -> str:
    output = client.containers.run(
        BUSYBOX,
        ["sh", "-c", LISTING],
        volumes={volume: {"bind": "/data", "mode": "ro"}},
        remove=True,
        labels={labels.HELPER: "test-listing"},
    )
    return str(output.decode())
