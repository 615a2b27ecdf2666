"""The desired state, resolved: what the engine must run, with no I/O left to do.

The loader (``model/loading.py``) turns ``compose.yaml`` into these values:
variables interpolated, relative paths made absolute inside the checked-out
commit, referenced files (env_file, bind-mounted repo files, build contexts,
secrets and configs) read and hashed, names expanded to Docker names (``<project>_<volume>``).
Planning and hashing work on these values alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.labels import container_name


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PortBinding(Frozen):
    target: int
    published: int | None = None  # None: Docker picks a free host port
    host_ip: str = ""
    protocol: Literal["tcp", "udp"] = "tcp"
    # Swarm mode only (None on a plain engine, and then not hashed): ingress
    # publishes on every node through the routing mesh, host on the task's node.
    mode: Literal["ingress", "host"] | None = None


class Mount(Frozen):
    type: Literal["volume", "bind"]
    # volume: the Docker volume name (``<project>_<key>`` or an external name);
    # bind: an absolute host path.
    source: str
    target: str
    read_only: bool = False
    # For binds of files inside the repository: a hash of their contents, so a
    # changed file recreates the service. None for host paths outside the repo.
    content_hash: str | None = None


class AnonymousVolume(Frozen):
    """A volume without a name (``- /app/node_modules``): Docker makes one per
    container; a recreate mounts the old container's into the new one."""

    target: str
    read_only: bool = False


class HealthCheck(Frozen):
    # Docker's form: ("CMD", ...), ("CMD-SHELL", "..."), or ("NONE",) to disable
    # the image's own check.
    test: tuple[str, ...]
    interval_s: float = 30.0
    timeout_s: float = 30.0
    retries: int = 3
    start_period_s: float = 0.0

    @property
    def disabled(self) -> bool:
        return self.test[:1] == ("NONE",)

    def max_wait_s(self) -> float:
        """How long a new container may take to turn healthy before it counts as failed."""
        return self.start_period_s + (self.interval_s + self.timeout_s) * (self.retries + 1) + 5


class BuildSpec(Frozen):
    context: str  # absolute path inside the checked-out commit
    dockerfile: str = "Dockerfile"  # relative to context
    args: dict[str, str] = {}
    target: str | None = None
    # Hash of every file in the context: a changed context is a new image tag.
    context_hash: str


DependsCondition = Literal["service_started", "service_healthy", "service_completed_successfully"]


class Dependency(Frozen):
    service: str
    condition: DependsCondition = "service_started"
    # Compose's ``restart: true``: recreating the dependency recreates this service too.
    restart: bool = False


class ServiceNetwork(Frozen):
    name: str  # Docker network name, e.g. ``shop_default``
    aliases: tuple[str, ...] = ()


class FileGrant(Frozen):
    """A secret or config a service is granted: a file put into its container.

    ``content`` is not dumped (so it reaches neither the hash's JSON nor any
    message); ``content_hash`` stands for it, and the config hash keys it for
    secrets (decide/hashing.py), so a label never carries a digest of a secret
    that could be tested against guesses.
    """

    name: str  # the top-level key, e.g. ``db-password``
    target: str  # absolute path in the container
    uid: int = 0
    gid: int = 0
    mode: int = 0o444
    # sha256 hex of the content; out of repr, as a plain digest of a short secret
    # can be tested against guesses (the config hash keys it).
    content_hash: str = Field(repr=False)
    content: bytes = Field(default=b"", repr=False, exclude=True)
    # Content decrypted from the commit, or a secret: keyed in the config hash.
    sensitive: bool = Field(default=False, exclude=True)


class Ulimit(Frozen):
    name: str  # nofile, nproc, ...
    soft: int
    hard: int


class LogConfig(Frozen):
    driver: str = ""  # "": the engine's default driver (json-file unless set otherwise)
    options: dict[str, str] = {}


class UpdatePolicy(Frozen):
    """Swarm's ``deploy.update_config`` or ``deploy.rollback_config``, resolved."""

    parallelism: int = 1  # tasks replaced at once; 0: all
    delay_s: float = 0.0  # between batches
    # start-first: the new task runs (and is healthy) before the old one stops,
    # which a port published in host mode cannot allow (compose_checks decides).
    order: Literal["start-first", "stop-first"] = "start-first"
    # How long each new task is watched for a failure; None: from the health check.
    monitor_s: float | None = None
    max_failure_ratio: float = 0.0
    # What Swarm does when the update fails: an update is always rolled back (and
    # reported as a failed deploy); a rollback that fails pauses or goes on.
    failure_action: Literal["rollback", "pause", "continue"] = "rollback"


class RestartPolicy(Frozen):
    """Swarm's ``deploy.restart_policy`` (``restart:`` is the plain engine's)."""

    condition: Literal["none", "on-failure", "any"] = "any"
    delay_s: float = 5.0
    max_attempts: int | None = None  # None: without limit
    window_s: float = 0.0


class SwarmDeploy(Frozen):
    """How Swarm runs a service: set on every service in swarm mode, None otherwise."""

    mode: Literal["replicated", "global"] = "replicated"
    replicas: int = 1
    # Placement: Docker's constraint expressions (``node.hostname == vm1``) and
    # spread preferences (the label after ``spread=``).
    constraints: tuple[str, ...] = ()
    spread: tuple[str, ...] = ()
    max_replicas_per_node: int | None = None
    update: UpdatePolicy = UpdatePolicy()
    rollback: UpdatePolicy = UpdatePolicy(failure_action="pause")
    restart_policy: RestartPolicy = RestartPolicy()
    endpoint_mode: Literal["vip", "dnsrr"] = "vip"
    # ``deploy.labels``: on the Swarm service, not its containers.
    labels: dict[str, str] = {}


class ServiceSpec(Frozen):
    name: str  # the compose key, e.g. ``web``
    image: str  # for a build: the tag the reconciler gives the built image
    build: BuildSpec | None = None
    pull_policy: Literal["missing", "always", "never", "build"] = "missing"
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: dict[str, str] = {}
    ports: tuple[PortBinding, ...] = ()
    mounts: tuple[Mount, ...] = ()
    networks: tuple[ServiceNetwork, ...] = ()
    depends_on: tuple[Dependency, ...] = ()
    healthcheck: HealthCheck | None = None
    restart: str = "no"  # no | always | on-failure[:N] | unless-stopped
    labels: dict[str, str] = {}
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    stop_grace_period_s: float = 10.0
    # Added since hash version 1 (decide/hashing.py): hashed only when set.
    anonymous_volumes: tuple[AnonymousVolume, ...] = ()
    # Compose's ``secrets:`` and ``configs:``, put into the container before it
    # starts (adapters/docker_engine.py says how and why).
    secrets: tuple[FileGrant, ...] = ()
    configs: tuple[FileGrant, ...] = ()
    # Runtime keys (docs/compose-subset.md), each at Docker's own default when
    # unset so that it enters the config hash only when used (decide/hashing.py).
    expose: tuple[str, ...] = ()  # "3000/tcp", one per port of a range
    stop_signal: str | None = None
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    init: bool | None = None  # None: the engine's default
    tmpfs: tuple[str, ...] = ()  # "/run" or "/run:size=64m"
    shm_size: int | None = None  # bytes
    extra_hosts: tuple[str, ...] = ()  # "host:ip", as Docker's ExtraHosts
    read_only: bool = False
    security_opt: tuple[str, ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    sysctls: dict[str, str] = {}
    logging: LogConfig | None = None
    mem_limit: int | None = None  # bytes; also deploy.resources.limits.memory
    mem_reservation: int | None = None  # bytes; also deploy.resources.reservations.memory
    cpus: float | None = None  # also deploy.resources.limits.cpus
    pids_limit: int | None = None  # also deploy.resources.limits.pids
    stdin_open: bool = False
    tty: bool = False
    # Docker's value: "host", "none" or "container:<the other service's container>".
    network_mode: str | None = None
    # The name the container gets instead of <project>-<service>-1 (container_of).
    container_name: str | None = None
    # Swarm mode only (None on a plain engine): replicas, placement, updates.
    deploy: SwarmDeploy | None = None
    # Values decrypted from the commit's encrypted files: the config hash takes a
    # keyed digest of any field holding one (decide/hashing.py). Never dumped.
    secret_values: frozenset[str] = Field(default=frozenset(), repr=False, exclude=True)
    # The repository files the service reads (env files, bind-mounted files and
    # folders, the build context and a Dockerfile outside it), by path from the
    # repository root, with a hash of what they hold: the plan names those that
    # changed (decide/hashing.py ``config_parts``). Not part of the config hash:
    # their effect already is (environment values, mount and context hashes).
    sources: dict[str, str] = Field(default={}, exclude=True)


class NetworkSpec(Frozen):
    key: str  # the compose key, e.g. ``default``
    name: str  # Docker name, e.g. ``shop_default``
    driver: str = "bridge"
    internal: bool = False
    labels: dict[str, str] = {}
    external: bool = False  # exists already; never created nor removed
    # Swarm mode: overlay networks are attachable, so helper containers can join.
    attachable: bool = False


# The local driver's mount types whose data lives on a server, not on the node.
SHARED_DRIVER_TYPES = frozenset({"nfs", "nfs4", "cifs"})


def keeps_data_on_its_node(
    *, external: bool, driver: str | None, driver_opts: Mapping[str, str]
) -> bool:
    """Whether a volume's data lives on the node that mounts it: the local driver
    without a network file system (NFS, CIFS) under it. An external volume counts
    as such: its driver is not known."""
    if external:
        return True
    if (driver or "local") != "local":
        return False  # a volume plugin: its storage is the plugin's
    return driver_opts.get("type", "").lower() not in SHARED_DRIVER_TYPES


class VolumeSpec(Frozen):
    key: str
    name: str
    driver: str = "local"
    driver_opts: dict[str, str] = {}
    labels: dict[str, str] = {}
    external: bool = False

    @property
    def on_one_node(self) -> bool:
        """Its data is on the node of the task that mounts it (in swarm mode)."""
        return keeps_data_on_its_node(
            external=self.external, driver=self.driver, driver_opts=self.driver_opts
        )


class DesiredState(Frozen):
    project: str
    # In file order; only the services whose profiles are active.
    services: dict[str, ServiceSpec]
    networks: dict[str, NetworkSpec]
    volumes: dict[str, VolumeSpec]
    # Where each service is declared, for messages: ("desired-state/compose.yaml", 12).
    service_lines: dict[str, int] = {}
    compose_path: str = "desired-state/compose.yaml"
    # Loaded for a plain engine or for Swarm (services then run as Swarm services).
    engine_mode: Literal["engine", "swarm"] = "engine"

    def services_mounting(self, volume_name: str) -> list[ServiceSpec]:
        """The services that mount the Docker volume ``volume_name``, in file order."""
        return [
            service
            for service in self.services.values()
            if any(m.type == "volume" and m.source == volume_name for m in service.mounts)
        ]

    def container_of(self, service: str) -> str:
        """What names ``service``'s container: its container_name, or Compose's default;
        in swarm mode the Swarm service, whose tasks are its containers
        (adapters/stack_control.py finds the running one)."""
        if self.engine_mode == "swarm":
            return f"{self.project}_{service}"
        spec = self.services.get(service)
        return (
            container_name_of(self.project, spec) if spec else container_name(self.project, service)
        )


def container_name_of(project: str, service: ServiceSpec) -> str:
    """Where the reconciler names a service's container: ``container_name`` or Compose's."""
    return service.container_name or container_name(project, service.name)
