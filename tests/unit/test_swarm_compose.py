"""compose.yaml in swarm mode: deploy read and resolved, Swarm's refusals at their line.

``load_desired_state(..., engine_mode="swarm")`` on files written under
``tmp_path``; the default stack of desired-state/ too, which swarm mode refuses
(it builds an image and orders its services), with the documented errors.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.decide.hashing import config_hash
from reconciler.errors import InvalidDesiredState
from reconciler.model.desired import (
    DesiredState,
    PortBinding,
    RestartPolicy,
    SwarmDeploy,
    UpdatePolicy,
)
from reconciler.model.engine_mode import EngineMode, swarm_mode_of, swarm_role_of
from reconciler.model.loading import load_desired_state
from tests.unit.test_default_desired_state import ROOT, example_env

COMPOSE = "desired-state/compose.yaml"


def load(
    root: Path, text: str, *, mode: EngineMode = "swarm", files: dict[str, str] | None = None
) -> DesiredState:
    folder = root / "desired-state"
    folder.mkdir(exist_ok=True)
    (folder / "compose.yaml").write_text(textwrap.dedent(text).lstrip())
    for rel, content in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    return load_desired_state(root, environ={}, engine_mode=mode)


def errors(root: Path, text: str, *, mode: EngineMode = "swarm", **kwargs: object) -> list[str]:
    with pytest.raises(InvalidDesiredState) as caught:
        load(root, text, mode=mode, **kwargs)  # type: ignore[arg-type]
    return [str(issue) for issue in caught.value.issues]


def test_a_service_without_deploy_gets_the_defaults_of_a_health_gated_update(
    tmp_path: Path,
) -> None:
    desired = load(
        tmp_path,
        """
        name: shop
        services:
          web:
            image: nginx:1.27
            ports: ["8080:80"]
        """,
    )

    web = desired.services["web"]
    assert web.deploy == SwarmDeploy()
    assert web.deploy.update.order == "start-first"
    assert web.deploy.update.failure_action == "rollback"
    assert web.deploy.rollback.failure_action == "pause"
    assert web.deploy.restart_policy == RestartPolicy(condition="any", delay_s=5.0)
    assert web.ports == (PortBinding(target=80, published=8080, mode="ingress"),)
    default = desired.networks["default"]
    assert (default.driver, default.attachable) == ("overlay", True)


def test_deploy_is_read_in_composes_syntaxes(tmp_path: Path) -> None:
    desired = load(
        tmp_path,
        """
        name: shop
        services:
          web:
            image: registry.example.com/shop/web@sha256:{digest}
            deploy:
              mode: replicated
              replicas: 3
              endpoint_mode: dnsrr
              labels: [team=web]
              placement:
                constraints: ["node.role == worker", "node.labels.zone != edge"]
                preferences:
                  - spread: node.labels.zone
                max_replicas_per_node: 2
              update_config:
                parallelism: 2
                delay: 10s
                failure_action: rollback
                monitor: 1m30s
                max_failure_ratio: 0.25
                order: stop-first
              rollback_config:
                parallelism: 0
                failure_action: continue
              restart_policy:
                condition: on-failure
                delay: 500ms
                max_attempts: 3
                window: 2m
              resources:
                limits: {memory: 256m, cpus: "0.5"}
          worker:
            image: shop/worker:1
            deploy:
              mode: global
        """.replace("{digest}", "a" * 64),
    )

    web = desired.services["web"].deploy
    assert web == SwarmDeploy(
        replicas=3,
        constraints=("node.role == worker", "node.labels.zone != edge"),
        spread=("node.labels.zone",),
        max_replicas_per_node=2,
        update=UpdatePolicy(
            parallelism=2, delay_s=10.0, order="stop-first", monitor_s=90.0, max_failure_ratio=0.25
        ),
        rollback=UpdatePolicy(parallelism=0, failure_action="continue"),
        restart_policy=RestartPolicy(
            condition="on-failure", delay_s=0.5, max_attempts=3, window_s=120.0
        ),
        endpoint_mode="dnsrr",
        labels={"team": "web"},
    )
    assert desired.services["web"].mem_limit == 256 * 1024**2
    assert desired.services["web"].cpus == 0.5
    assert desired.services["worker"].deploy == SwarmDeploy(mode="global")


def test_a_port_in_host_mode_makes_updates_stop_first(tmp_path: Path) -> None:
    desired = load(
        tmp_path,
        """
        name: shop
        services:
          web:
            image: nginx:1.27
            ports:
              - {target: 80, published: 80, mode: host}
        """,
    )

    web = desired.services["web"]
    assert web.ports[0].mode == "host"
    assert web.deploy is not None
    assert (web.deploy.update.order, web.deploy.rollback.order) == ("stop-first", "stop-first")


def test_start_first_with_a_port_in_host_mode_is_an_error(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        name: shop
        services:
          web:
            image: nginx:1.27
            ports:
              - {target: 80, published: 80, mode: host}
            deploy:
              update_config: {order: start-first}
              rollback_config:
                order: start-first
        """,
    )

    why = (
        "start-first runs the new task beside the old one, and a port published in host mode "
        "is held by one task per node: write order: stop-first, or publish in mode ingress"
    )
    assert found == [
        f"{COMPOSE}:8: services.web.deploy.update_config.order: {why}",
        f"{COMPOSE}:10: services.web.deploy.rollback_config.order: {why}",
    ]


def test_deploy_mistakes_are_errors_at_their_line(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        name: shop
        services:
          web:
            image: nginx:1.27
            ports:
              - {target: 80, published: 80, mode: host}
            deploy:
              update_config:
                failure_action: pause
                order: start-first
                delay: 10
              rollback_config:
                failure_action: rollback
              placement:
                constraints: [node.hostname vm1]
                preferences: [{pack: node.id}]
          jobs:
            image: shop/jobs:1
            ports: ["9000:9000"]
            deploy:
              mode: global
              replicas: 2
              endpoint_mode: dnsrr
              labels: {dev.reconciler.owner: me}
          once:
            image: shop/once:1
            deploy: {mode: replicated-job, replicaz: 1}
        """,
    )

    assert sorted(found) == sorted(
        [
            f"{COMPOSE}:27: services.once.deploy.replicaz: unknown key (did you mean 'replicas'?)",
            f"{COMPOSE}:9: services.web.deploy.update_config.failure_action: 'pause': a failed "
            "update must be rolled back and reported as a failed deploy: write failure_action: "
            "rollback, or leave it out",
            f"{COMPOSE}:11: services.web.deploy.update_config.delay: invalid duration '10': use a "
            "number with a unit (h, m, s, ms, us, ns), such as 1m30s, 10s or 500ms",
            f"{COMPOSE}:13: services.web.deploy.rollback_config.failure_action: 'rollback': a "
            "rollback that fails either pauses (pause, the default) or goes on (continue); there "
            "is nothing to roll a rollback back to",
            f"{COMPOSE}:15: services.web.deploy.placement.constraints[0]: invalid constraint "
            "'node.hostname vm1': write ATTRIBUTE == VALUE or ATTRIBUTE != VALUE, e.g. "
            "node.hostname == vm1 or node.labels.zone == eu",
            f"{COMPOSE}:16: services.web.deploy.placement.preferences[0]: Swarm's only "
            "placement preference is spread: write - spread: LABEL, e.g. - spread: "
            "node.labels.zone",
            f"{COMPOSE}:20: services.jobs.deploy: mode global runs one task on every node (that "
            "the placement allows): drop replicas, or write mode: replicated",
            f"{COMPOSE}:27: services.once.deploy.mode: mode replicated-job: a job runs to "
            "completion once, and the reconciler deploys services that keep running; write "
            "replicated or global",
        ]
    )


def test_dnsrr_with_an_ingress_port_and_reserved_deploy_labels_are_errors(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        name: shop
        services:
          jobs:
            image: shop/jobs:1
            ports: ["9000:9000"]
            deploy:
              endpoint_mode: dnsrr
              labels: {dev.reconciler.owner: me}
        """,
    )

    assert found == [
        f"{COMPOSE}:7: services.jobs.deploy.endpoint_mode: dnsrr gives the service no virtual "
        "IP, which a port published in mode ingress (the default in swarm mode) needs: publish "
        "in mode host, or write endpoint_mode: vip",
        f"{COMPOSE}:8: services.jobs.deploy.labels.dev.reconciler.owner: label "
        "'dev.reconciler.owner': labels starting with dev.reconciler. are the reconciler's own "
        "(they mark what it owns); choose another name",
    ]


# Each key Swarm ignores or forbids, at the line it is on, with what to write.
REFUSED = """
name: shop
services:
  web:
    image: nginx:1.27
    build: ./web
    container_name: shop-web
    depends_on: [db]
    restart: unless-stopped
    pull_policy: always
    tmpfs: /run
    shm_size: 64m
    security_opt: ["no-new-privileges:true"]
    expose: [3000]
    links: [db]
    ports: ["127.0.0.1:8080:80"]
    volumes:
      - /app/cache
      - ./web/nginx.conf:/etc/nginx/nginx.conf:ro
      - /srv/shared:/srv/shared
  db:
    image: mariadb:11.4
    network_mode: host
    pull_policy: missing
"""
REFUSED_AT = {
    5: ("services.web.build", "build the image in CI and push it to a registry; name it by "
        "image: with the tag or digest the CI gave"),
    6: ("services.web.container_name", "Swarm names each task itself"),
    7: ("services.web.depends_on", "Swarm starts all services at once, in no order: drop it; "
        "make the service retry its connection, healthchecks gate updates"),
    8: ("services.web.restart", "use deploy.restart_policy.condition"),
    9: ("services.web.pull_policy", "drop pull_policy"),
    10: ("services.web.tmpfs", "docker stack deploy ignores tmpfs:"),
    11: ("services.web.shm_size", "Swarm's service spec has no shared memory size"),
    12: ("services.web.security_opt", "docker stack deploy ignores security_opt"),
    13: ("services.web.expose", "Swarm has no exposed ports"),
    14: ("services.web.links", "Swarm has no links"),
    15: ("services.web.ports[0]", "host_ip cannot be kept"),
    17: ("services.web.volumes[0]", "a task's anonymous volume stays behind on its node at "
         "each update and the new task starts with an empty one; name the volume"),
    18: ("services.web.volumes[1]", "the checkout exists on the manager only"),
    19: ("services.web.volumes[2]", "a named volume with driver and driver_opts (NFS, CIFS)"),
    22: ("services.db.network_mode", "list the networks under networks:"),
}  # fmt: skip


def test_keys_swarm_ignores_or_forbids_are_errors_at_their_line(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        REFUSED,
        files={
            "desired-state/web/Dockerfile": "FROM nginx\n",
            "desired-state/web/nginx.conf": "x\n",
        },
    )

    refused = [issue for issue in found if "refused in swarm mode: " in issue]
    assert len(refused) == len(REFUSED_AT), "\n".join(found)
    for line, (key, hint) in REFUSED_AT.items():
        prefix = f"{COMPOSE}:{line}: {key}: refused in swarm mode: "
        assert any(i.startswith(prefix) and hint in i for i in refused), (prefix, hint, found)


def test_the_same_keys_are_accepted_on_a_plain_engine(tmp_path: Path) -> None:
    text = REFUSED.replace("    links: [db]\n", "").replace("    network_mode: host\n", "")
    desired = load(
        tmp_path,
        text,
        mode="engine",
        files={
            "desired-state/web/Dockerfile": "FROM nginx\n",
            "desired-state/web/nginx.conf": "x\n",
        },
    )

    assert {name: spec.deploy for name, spec in desired.services.items()} == {
        "web": None,
        "db": None,
    }
    assert desired.services["web"].ports[0].mode is None
    assert desired.networks["default"].driver == "bridge"


def test_keys_the_service_api_has_are_accepted_in_swarm_mode(tmp_path: Path) -> None:
    desired = load(
        tmp_path,
        """
        name: shop
        services:
          web:
            image: nginx:1.27
            init: true
            read_only: true
            stop_signal: SIGQUIT
            stop_grace_period: 30s
            cap_add: [NET_ADMIN]
            cap_drop: [ALL]
            sysctls: {net.core.somaxconn: 1024}
            ulimits: {nofile: 4096}
            logging: {driver: json-file, options: {max-size: 10m}}
            extra_hosts: ["db.local:10.0.0.5"]
            hostname: web
            user: "101"
            working_dir: /srv
            stdin_open: true
            tty: true
            mem_limit: 512m
            mem_reservation: 128m
            cpus: 1.5
            pids_limit: 100
            healthcheck: {test: curl -f http://localhost/, interval: 10s}
            secrets: [token]
            configs: [{source: site, target: /etc/nginx/conf.d/site.conf}]
            pull_policy: missing
        secrets:
          token: {file: ./token.txt}
        configs:
          site: {content: "server {}"}
        """,
        files={"desired-state/token.txt": "s3cret\n"},
    )

    web = desired.services["web"]
    assert (web.init, web.read_only, web.stop_signal, web.mem_limit) == (
        True,
        True,
        "SIGQUIT",
        512 * 1024**2,
    )
    assert [grant.name for grant in web.secrets] == ["token"]


def test_networks_are_overlay_and_attachable_and_bridge_is_refused(tmp_path: Path) -> None:
    text = """
        name: shop
        services:
          web:
            image: nginx:1.27
            networks: [front, back, proxy]
        networks:
          front:
          back:
            internal: true
            attachable: true
          proxy:
            external: true
            name: traefik
        """
    desired = load(tmp_path, text)

    nets = desired.networks
    assert (nets["front"].driver, nets["front"].attachable) == ("overlay", True)
    assert (nets["back"].internal, nets["back"].attachable) == (True, True)
    assert (nets["proxy"].external, nets["proxy"].attachable) == (True, False)
    assert "default" not in nets

    found = errors(
        tmp_path,
        text.replace(
            "          front:\n", "          front:\n            driver: bridge\n"
        ).replace("attachable: true", "attachable: false"),
    )
    assert sorted(found) == [
        f"{COMPOSE}:11: networks.back.attachable: the reconciler's helpers (backups, restores) "
        "join the stack's networks, so they are attachable: leave attachable out, or write true",
        f"{COMPOSE}:8: networks.front.driver: a bridge network joins containers of one node "
        "only: in swarm mode leave driver out (overlay, the default) or write driver: overlay",
    ]


STATEFUL = """
name: shop
services:
  db:
    image: mariadb:11.4
    volumes:
      - db:/var/lib/mysql
      - site:/srv/site
{deploy}
volumes:
  db:
  site:
    driver: local
    driver_opts:
      type: nfs
      o: addr=10.0.0.10,nfsvers=4,rw
      device: ":/export/site"
"""


def test_a_service_with_a_local_volume_must_be_pinned_to_one_node(tmp_path: Path) -> None:
    found = errors(tmp_path, STATEFUL.format(deploy=""))

    assert found == [
        f"{COMPOSE}:5: services.db.volumes: volume 'db' keeps its data on one node (driver "
        "local): Swarm could start the task on another node, with an empty volume there; pin "
        "the service to one node (deploy: placement: constraints: [node.hostname == NODE]), or "
        "keep the data on storage the nodes share (driver_opts type nfs or cifs)"
    ]


@pytest.mark.parametrize(
    "constraints",
    [["node.hostname == vm1"], ["node.id==x7k2", "node.role == manager"]],
)
def test_a_constraint_naming_one_node_pins_it(tmp_path: Path, constraints: list[str]) -> None:
    deploy = f"    deploy:\n      placement:\n        constraints: {constraints}"
    desired = load(tmp_path, STATEFUL.format(deploy=deploy))

    assert desired.services["db"].deploy is not None
    assert desired.services["db"].deploy.constraints == tuple(c.strip() for c in constraints)


@pytest.mark.parametrize(
    "constraints",
    [
        ["node.role == manager"],
        ["node.hostname != vm1"],
        ["node.hostname == vm1", "node.hostname == vm2"],
    ],
)
def test_a_constraint_that_names_no_single_node_does_not(
    tmp_path: Path, constraints: list[str]
) -> None:
    deploy = f"    deploy:\n      placement:\n        constraints: {constraints}"

    found = errors(tmp_path, STATEFUL.format(deploy=deploy))

    assert [i.split(": ")[1] for i in found] == ["services.db.volumes"]


@pytest.mark.parametrize("mode", ["engine", "swarm"])
def test_nfs_and_cifs_volumes_validate_and_need_no_pin(tmp_path: Path, mode: EngineMode) -> None:
    desired = load(
        tmp_path,
        """
        name: shop
        services:
          web:
            image: nginx:1.27
            volumes:
              - site:/var/www/html
              - media:/var/www/media
              - uploads:/var/www/uploads
        volumes:
          site:
            driver: local
            driver_opts:
              type: nfs
              o: addr=10.0.0.10,nfsvers=4,rw
              device: ":/export/site"
          media:
            driver_opts:
              type: nfs4
              o: addr=nas.example.com,rw,soft
              device: ":/media"
          uploads:
            driver: local
            driver_opts:
              type: cifs
              o: addr=10.0.0.11,username=web,password=${SMB_PASSWORD:-x},vers=3.0,uid=33
              device: //10.0.0.11/uploads
        """,
        mode=mode,
    )

    site = desired.volumes["site"]
    assert (site.driver, site.driver_opts) == (
        "local",
        {"type": "nfs", "o": "addr=10.0.0.10,nfsvers=4,rw", "device": ":/export/site"},
    )
    assert desired.volumes["media"].driver_opts["type"] == "nfs4"
    assert desired.volumes["uploads"].driver_opts["device"] == "//10.0.0.11/uploads"


def test_on_a_plain_engine_swarms_keys_say_they_apply_in_swarm_mode(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        name: shop
        services:
          web:
            image: nginx:1.27
            ports: [{target: 80, published: 80, mode: ingress}]
            deploy:
              replicas: 2
              placement: {constraints: [node.hostname == vm1]}
        networks:
          default:
            attachable: true
        """,
        mode="engine",
    )

    where = 'docs/operations.md, "Growing past one VM"'
    assert found == [
        f"{COMPOSE}:5: services.web.ports[0].mode: mode ingress is Swarm's routing mesh: it "
        f"applies in swarm mode ({where}); on one engine write mode: host or leave mode out",
        f"{COMPOSE}:7: services.web.deploy.replicas: unsupported key: the reconciler runs one "
        "container per service on one VM, so of deploy only resources (limits: memory, cpus, "
        f"pids; reservations: memory) applies; replicas applies in swarm mode ({where})",
        f"{COMPOSE}:8: services.web.deploy.placement: unsupported key: the reconciler runs one "
        "container per service on one VM, so of deploy only resources (limits: memory, cpus, "
        f"pids; reservations: memory) applies; placement applies in swarm mode ({where})",
        f"{COMPOSE}:11: networks.default.attachable: unsupported key: attachable is for "
        f"Swarm's overlay networks ({where}); on one engine any container may join a bridge "
        "network, so drop it",
    ]


def test_a_secret_store_key_says_the_reconciler_makes_the_swarm_secret(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        name: shop
        services:
          web: {image: nginx:1.27, secrets: [token]}
        secrets:
          token: {external: true}
        """,
    )

    assert found[0].startswith(
        f"{COMPOSE}:5: secrets.token.external: unsupported key: in swarm mode the reconciler "
        "makes the Swarm secret itself, named by a hash of its content"
    )


def test_the_default_stack_is_refused_in_swarm_mode_with_the_documented_errors() -> None:
    # It builds its web server's image, orders its services, restarts them by
    # restart:, keeps local volumes unpinned and binds the reconciler's host
    # folders: a stack for one VM. docs/compose-subset.md says what to write.
    with pytest.raises(InvalidDesiredState) as caught:
        load_desired_state(ROOT, environ=example_env(), engine_mode="swarm")

    found = {(issue.key, issue.message.split(":")[0]) for issue in caught.value.issues}
    assert found == {
        ("services.webserver.build", "refused in swarm mode"),
        ("services.webserver.depends_on", "refused in swarm mode"),
        ("services.webserver.restart", "refused in swarm mode"),
        ("services.webserver.volumes",
         "volumes 'uploads', 'tls' keep their data on one node (driver local)"),
        ("services.db.restart", "refused in swarm mode"),
        ("services.db.volumes", "volume 'db' keeps its data on one node (driver local)"),
        ("services.phpmyadmin.depends_on", "refused in swarm mode"),
        ("services.phpmyadmin.restart", "refused in swarm mode"),
        ("services.phpmyadmin.ports[0]", "refused in swarm mode"),
        ("services.reconciler.restart", "refused in swarm mode"),
        ("services.reconciler.ports[0]", "refused in swarm mode"),
        *((f"services.reconciler.volumes[{i}]", "refused in swarm mode") for i in range(4)),
    }  # fmt: skip


def test_deploy_enters_the_config_hash_only_when_set(tmp_path: Path) -> None:
    text = """
        name: shop
        services:
          web:
            image: nginx:1.27
            ports: ["8080:80"]
        """
    engine = load(tmp_path, text, mode="engine").services["web"]
    swarm = load(tmp_path, text, mode="swarm").services["web"]

    unset = engine.model_copy(update={"ports": (PortBinding(target=80, published=8080),)})
    assert config_hash(engine) == config_hash(unset)
    assert config_hash(swarm) != config_hash(engine)
    replicas = swarm.model_copy(update={"deploy": SwarmDeploy(replicas=2)})
    assert config_hash(replicas) != config_hash(swarm)


@pytest.mark.parametrize(
    ("info", "role"),
    [
        ({"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}, "manager"),
        ({"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}, "worker"),
        ({"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}}, "none"),
        ({"Swarm": {"LocalNodeState": "pending", "ControlAvailable": True}}, "worker"),
        ({"Swarm": {"LocalNodeState": "locked", "ControlAvailable": False}}, "worker"),
        ({"Swarm": {"LocalNodeState": ""}}, "none"),
        ({"Swarm": None}, "none"),
        ({}, "none"),
    ],
)
def test_swarm_mode_is_a_manager_of_an_active_swarm(info: dict[str, object], role: str) -> None:
    assert swarm_role_of(info) == role
    assert swarm_mode_of(info) is (role == "manager")
