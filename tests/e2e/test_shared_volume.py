"""A volume on shared storage (driver_opts), backed up and restored like a local one.

No NFS or CIFS server runs here: the local driver's bind form
(``driver_opts: {type: none, o: bind, device: DIR}``) stands in for one, a
volume whose files live in a folder of the host rather than under
/var/lib/docker, as an NFS volume's live on the server. A restore writes
into the volume (emptied, then the staged copy copied in): the volume is
never removed and made again, so its driver options stay as compose.yaml set
them, and the folder behind it holds the restored files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import docker
import pytest

from tests.e2e.test_restore import Env
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.s3_server import S3Server
from tests.integration.backup_stack import listing

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  web:
    image: reconciler-local/busybox:latest
    command: ["sh", "-c", "exec httpd -f -p 8080 -h /data"]
    volumes: ["site:/data"]
    healthcheck:
      test: ["CMD-SHELL", "pidof httpd >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 10
    stop_grace_period: 1s
volumes:
  site:
    driver: local
    driver_opts: {{type: none, o: bind, device: "{device}"}}
"""

BACKUP = """\
target: ${BACKUP_TARGET}
volumes: [site]
"""


def test_a_bind_backed_volume_is_backed_up_and_restored_in_place(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_env: S3Server,
    s3_bucket: str,
) -> None:
    shared = tmp_path / "shared-storage"
    shared.mkdir()
    env = Env(tmp_path, git_daemon, docker_client, project_name, s3_env, s3_bucket)
    env.remote.commit_files(
        {
            "desired-state/compose.yaml": COMPOSE.format(device=shared),
            "desired-state/backup.yaml": BACKUP,
            "desired-state/restore.yaml": "restores: []\n",
        }
    )
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    volume = docker_client.volumes.get(f"{project_name}_site")
    options = volume.attrs["Options"]
    assert options == {"type": "none", "o": "bind", "device": str(shared)}

    env.sh(
        "echo hello > /data/a.txt && mkdir -p /data/sub && echo x > /data/sub/b.txt "
        "&& chown 33:33 /data/sub/b.txt && chmod 0640 /data/sub/b.txt"
    )
    # What the container writes is on the shared storage, not under /var/lib/docker.
    assert (shared / "a.txt").read_text() == "hello\n"
    files = listing(docker_client, f"{project_name}_site")
    env.backup()

    env.sh("rm /data/a.txt && echo changed > /data/sub/b.txt && echo new > /data/new.txt")
    assert (shared / "new.txt").exists()

    since = int(time.time()) - 1
    env.remote.commit_files(
        {
            "desired-state/restore.yaml": json.dumps(
                {"restores": [{"id": "r1", "backup": "latest", "volumes": ["site"]}]}
            )
        }
    )
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    assert env.restores()["r1"]["state"] == "succeeded"
    # Exactly the backup's files, owners and modes, in the volume and in the folder behind it.
    assert listing(docker_client, f"{project_name}_site") == files
    assert (shared / "a.txt").read_text() == "hello\n"
    assert (shared / "sub" / "b.txt").read_text() == "x\n"
    assert (shared / "sub" / "b.txt").stat().st_uid == 33
    assert not (shared / "new.txt").exists()
    # The same volume, with the same driver options: never removed and made again.
    events = docker_client.events(
        since=since,
        until=int(time.time()) + 1,
        filters={"type": "volume", "event": "destroy"},
        decode=True,
    )
    destroyed = [e["Actor"]["ID"] for e in events]
    assert f"{project_name}_site" not in destroyed
    assert any("restore-stage" in name for name in destroyed)  # the staging volume went
    after = docker_client.volumes.get(f"{project_name}_site")
    assert after.attrs["Labels"] == volume.attrs["Labels"]
    assert after.attrs["Driver"] == "local"
    assert after.attrs["Options"] == options
    web = docker_client.containers.get(f"{project_name}-web-1")
    assert web.status == "running"
