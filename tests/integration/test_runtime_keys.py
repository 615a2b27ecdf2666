"""The runtime keys of compose.yaml on the real engine: what Docker's HostConfig carries.

One stack, written as a user would (compose.yaml in a checkout), loaded,
planned and applied as a pass does; ``docker inspect`` then shows each key
where Docker keeps it, and a second plan has nothing to do. The project's
containers are removed by the ``project_name`` fixture (they carry its label).
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from reconciler.adapters.docker_engine import DockerEngine
from reconciler.decide.actions import describe
from reconciler.decide.planning import plan
from reconciler.deploy.applying import apply
from reconciler.model.loading import load_desired_state

pytestmark = pytest.mark.integration

COMPOSE = """\
name: ignored-the-project-comes-from-the-test
x-logging: &logging
  driver: json-file
  options:
    max-size: 1m
    max-file: "2"
services:
  web:
    image: {image}
    command: [sleep, "300"]
    container_name: {project}-front
    expose: [3000, "4000/udp"]
    stop_signal: SIGINT
    stop_grace_period: 2s
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    init: true
    tmpfs: ["/run:size=8m"]
    shm_size: 32m
    extra_hosts: ["db.local:10.0.0.5", "gw=host-gateway"]
    read_only: true
    security_opt: ["no-new-privileges:true"]
    ulimits:
      nofile: {{soft: 1024, hard: 2048}}
    sysctls:
      net.core.somaxconn: 1024
    logging: *logging
    deploy:
      resources:
        limits: {{memory: 64m, cpus: "0.5", pids: 100}}
        reservations: {{memory: 32m}}
    stdin_open: true
    tty: true
  sidecar:
    image: {image}
    command: [sleep, "300"]
    stop_grace_period: 1s
    network_mode: service:web
    logging: *logging
"""


def test_a_service_using_the_runtime_keys_runs_with_them_and_converges(
    engine: DockerEngine,
    docker_client: docker.DockerClient,
    project_name: str,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "desired-state"
    folder.mkdir()
    (folder / "compose.yaml").write_text(COMPOSE.format(image=busybox_image, project=project_name))
    desired = load_desired_state(tmp_path, project=project_name, environ={})

    first = plan(desired, engine.observe(project_name))
    assert not first.conflicts
    apply(first, engine, project=project_name, commit="1" * 40)

    web = docker_client.api.inspect_container(f"{project_name}-front")
    host = web["HostConfig"]
    config = web["Config"]
    assert host["CapAdd"] == ["NET_ADMIN"]
    assert host["CapDrop"] == ["MKNOD"]
    assert host["Init"] is True
    assert host["Tmpfs"] == {"/run": "size=8m"}
    assert host["ShmSize"] == 32 * 1024**2
    assert host["ExtraHosts"] == ["db.local:10.0.0.5", "gw:host-gateway"]
    assert host["ReadonlyRootfs"] is True
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "1m", "max-file": "2"},
    }
    assert host["Memory"] == 64 * 1024**2
    assert host["MemoryReservation"] == 32 * 1024**2
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 100
    assert set(config["ExposedPorts"]) == {"3000/tcp", "4000/udp"}
    assert config["StopSignal"] == "SIGINT"
    assert config["OpenStdin"] is True
    assert config["Tty"] is True
    assert web["State"]["Running"] is True

    sidecar = docker_client.api.inspect_container(f"{project_name}-sidecar-1")
    # Docker keeps the joined container by id once it has resolved the name.
    assert sidecar["HostConfig"]["NetworkMode"] in {
        f"container:{project_name}-front",
        f"container:{web['Id']}",
    }
    assert sidecar["State"]["Running"] is True

    second = plan(desired, engine.observe(project_name))
    assert second.actions == ()
    assert not second.conflicts

    # A new container_name: web is recreated from its container under the old
    # name, and the sidecar, whose network it shares, after it.
    (folder / "compose.yaml").write_text(
        COMPOSE.format(image=busybox_image, project=project_name).replace(
            f"{project_name}-front", f"{project_name}-edge"
        )
    )
    renamed = load_desired_state(tmp_path, project=project_name, environ={})
    third = plan(renamed, engine.observe(project_name))
    assert [describe(a) for a in third.actions] == [
        "recreate service web: container_name changed",
        "recreate service sidecar: network_mode changed; dependency web recreated",
    ]
    apply(third, engine, project=project_name, commit="2" * 40)
    names = {c.name for c in engine.observe(project_name).containers if c.project == project_name}
    assert names == {f"{project_name}-edge", f"{project_name}-sidecar-1"}
    assert plan(renamed, engine.observe(project_name)).actions == ()
