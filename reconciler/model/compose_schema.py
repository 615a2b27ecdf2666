"""The supported subset of the Compose Specification, as users write it.

These pydantic models validate ``compose.yaml`` after interpolation: both the
short syntaxes (``"8080:80"``, ``"data:/var/lib/mysql:ro"``, ``KEY=VAL``) and
the long ones are accepted, and short forms are normalised into long ones by
``before`` validators, so each mistake gets one clear message instead of one
per member of a union. Keys of the Compose Specification that the reconciler
does not implement are refused (never silently ignored); ``x-*`` extension
keys are ignored, as in Compose. No I/O here: ``model/loading.py`` checks what
needs the checkout (paths, files) and resolves names.

This module holds the file's top model (``ComposeFile``), ``Service``,
``Volume`` and ``Network``, and ``explain_extra``: why a key of the Compose
Specification is refused. The values of a service's keys have modules of their
own: compose_values.py (the parsers and the base model), compose_ports.py,
compose_mounts.py, compose_grants.py (secrets and configs),
compose_lifecycle.py (depends_on, healthcheck, restart) and compose_runtime.py
(sizes, limits, kernel and host settings).

docs/compose-subset.md documents the subset for users; keep them in step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, model_validator

from reconciler.model.compose_grants import (
    STORE_KEYS,
    STORE_REASON,
    ConfigGrants,
    SecretGrants,
    TopLevelConfig,
    TopLevelSecret,
)
from reconciler.model.compose_lifecycle import Dependencies, HealthCheck, Restart
from reconciler.model.compose_mounts import ServiceVolume, TmpfsMounts
from reconciler.model.compose_ports import ExposedPort, Port
from reconciler.model.compose_runtime import (
    ByteSize,
    Capability,
    ContainerName,
    Cpus,
    Deploy,
    ExtraHosts,
    Logging,
    NetworkMode,
    PidsLimit,
    Signal,
    Sysctls,
    Ulimit,
)
from reconciler.model.compose_values import (
    SWARM_DOCS,
    Command,
    ComposeModel,
    Duration,
    EnvMapping,
    Labels,
    NonEmptyText,
    Options,
    StringList,
    in_swarm_mode,
    require_mapping,
    scalar_text,
)
from reconciler.model.yaml_lines import KeyPath

# --- a service's networks, build and env files -----------------------------


class ServiceNetworkOptions(ComposeModel):
    aliases: StringList = []


def _network_list(value: Any) -> Any:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ValueError("a list of networks must hold network names")
        return dict.fromkeys(value)
    return value


class Build(ComposeModel):
    context: str = "."
    dockerfile: str = "Dockerfile"
    args: EnvMapping = {}
    target: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_syntax(cls, data: Any) -> Any:
        return {"context": data} if isinstance(data, str) else data


class EnvFile(ComposeModel):
    path: str
    required: bool = True

    @model_validator(mode="before")
    @classmethod
    def _short_syntax(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data


def _env_file_list(value: Any) -> Any:
    return [value] if isinstance(value, str | dict) else value


def _pull_policy(value: Any) -> Any:
    # "if_not_present" is Compose's older spelling of "missing".
    return "missing" if value == "if_not_present" else value


# --- services and the file ----------------------------------------------------


class Service(ComposeModel):
    image: NonEmptyText | None = None
    build: Build | None = None
    pull_policy: Annotated[
        Literal["missing", "always", "never", "build"], BeforeValidator(_pull_policy)
    ] = "missing"
    command: Command | None = None
    entrypoint: Command | None = None
    environment: EnvMapping = {}
    env_file: Annotated[list[EnvFile], BeforeValidator(_env_file_list)] = []
    ports: list[Port] = []
    volumes: list[ServiceVolume] = []
    networks: (
        Annotated[dict[str, ServiceNetworkOptions | None], BeforeValidator(_network_list)] | None
    ) = None
    depends_on: Dependencies = {}
    healthcheck: HealthCheck | None = None
    restart: Restart = "no"
    labels: Labels = {}
    user: Annotated[str, BeforeValidator(scalar_text)] | None = None
    working_dir: str | None = None
    hostname: str | None = None
    profiles: StringList = []
    stop_grace_period: Duration | None = None
    secrets: SecretGrants = []
    configs: ConfigGrants = []
    expose: list[ExposedPort] = []
    stop_signal: Signal | None = None
    cap_add: list[Capability] = []
    cap_drop: list[Capability] = []
    init: bool | None = None
    tmpfs: TmpfsMounts = []
    shm_size: ByteSize | None = None
    extra_hosts: ExtraHosts = []
    read_only: bool = False
    security_opt: list[NonEmptyText] = []
    ulimits: dict[str, Ulimit] = {}
    sysctls: Sysctls = {}
    logging: Logging | None = None
    mem_limit: ByteSize | None = None
    mem_reservation: ByteSize | None = None
    cpus: Cpus | None = None
    pids_limit: PidsLimit | None = None
    deploy: Deploy | None = None
    stdin_open: bool = False
    tty: bool = False
    network_mode: NetworkMode | None = None
    container_name: ContainerName | None = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        require_mapping(data, "service keys such as image, ports and volumes")
        return data


class Volume(ComposeModel):
    name: str | None = None
    external: bool = False
    driver: str | None = None
    driver_opts: Options = {}
    labels: Labels = {}

    @model_validator(mode="after")
    def _external_alone(self) -> Volume:
        if self.external and (self.driver or self.driver_opts or self.labels):
            raise ValueError("an external volume exists already: drop driver, driver_opts, labels")
        return self


def _attachable(value: bool, info: ValidationInfo) -> bool:
    if not in_swarm_mode(info):
        raise ValueError(
            f"unsupported key: attachable is for Swarm's overlay networks ({SWARM_DOCS}); "
            "on one engine any container may join a bridge network, so drop it"
        )
    if not value:
        raise ValueError(
            "the reconciler's helpers (backups, restores) join the stack's networks, so they "
            "are attachable: leave attachable out, or write true"
        )
    return value


class Network(ComposeModel):
    name: str | None = None
    external: bool = False
    driver: str | None = None
    internal: bool = False
    labels: Labels = {}
    # Swarm mode: overlay networks are always attachable (model/swarm_checks.py).
    attachable: Annotated[bool, AfterValidator(_attachable)] | None = None

    @model_validator(mode="after")
    def _external_alone(self) -> Network:
        if self.external and (self.driver or self.labels or self.internal):
            raise ValueError("an external network exists already: drop driver, internal, labels")
        return self


def _section(what: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            singular = what[:-1]
            raise ValueError(f"must be a mapping of {singular} names to {what} (name: ...)")
        return value

    return check


class ComposeFile(ComposeModel):
    name: str | None = None
    # Obsolete in the Compose Specification; Compose accepts and ignores it.
    version: Any = None
    services: Annotated[dict[str, Service], BeforeValidator(_section("services"))]
    volumes: Annotated[dict[str, Volume | None], BeforeValidator(_section("volumes"))] = {}
    networks: Annotated[dict[str, Network | None], BeforeValidator(_section("networks"))] = {}
    secrets: Annotated[dict[str, TopLevelSecret], BeforeValidator(_section("secrets"))] = {}
    configs: Annotated[dict[str, TopLevelConfig], BeforeValidator(_section("configs"))] = {}

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        require_mapping(data, "top-level keys such as services, volumes and networks")
        # An empty section (``volumes:`` with nothing under it) means none.
        return {k: ({} if v is None and k in _SECTIONS else v) for k, v in data.items()}


_SECTIONS = {"services", "volumes", "networks", "secrets", "configs"}

# Keys of the Compose Specification the reconciler does not implement: they
# are refused with "unsupported key" rather than "unknown key", so a user knows
# the key is right but the feature is missing.
UNSUPPORTED_TOP_LEVEL = frozenset({"include", "models"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


UNSUPPORTED_SERVICE = _words(
    """annotations attach blkio_config cgroup cgroup_parent cpu_count cpu_percent
    cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares cpuset credential_spec
    develop device_cgroup_rules devices dns dns_opt dns_search domainname driver_opts extends
    external_links gpus group_add ipc isolation label_file links mac_address mem_swappiness
    memswap_limit models oom_kill_disable oom_score_adj pid platform post_start pre_stop
    privileged provider runtime scale storage_opt use_api_socket userns_mode uts
    volumes_from"""
)


UNSUPPORTED_RESOURCES = frozenset({"devices", "generic_resources", "cpus"})
RESOURCES_REASON = (
    "unsupported key: on one engine the reconciler applies limits (memory, cpus, pids) "
    "and reservations.memory only"
)
UNSUPPORTED_BUILD = _words(
    """additional_contexts cache_from cache_to dockerfile_inline entitlements extra_hosts
    isolation labels network no_cache platforms privileged pull secrets shm_size ssh tags
    ulimits"""
)
UNSUPPORTED_VOLUME_LONG = frozenset({"bind", "volume", "tmpfs", "image", "consistency"})
UNSUPPORTED_PORT_LONG = frozenset({"name", "app_protocol"})
UNSUPPORTED_NETWORK = frozenset({"driver_opts", "enable_ipv4", "enable_ipv6", "ipam"})
UNSUPPORTED_SERVICE_NETWORK = frozenset(
    {"ipv4_address", "ipv6_address", "link_local_ips", "mac_address", "driver_opts", "priority"}
)
UNSUPPORTED_DEPENDS = frozenset[str]()
# Why, and what to write instead, where "unsupported" alone leaves a user stuck.
WHY_UNSUPPORTED = {
    "ipam": "the reconciler leaves subnets to Docker; drop ipam and reach services by name",
    "ipv4_address": "fixed addresses need a subnet the reconciler does not manage (ipam); "
    "reach the service by its name, which Docker's DNS resolves on the network",
    "ipv6_address": "fixed addresses need a subnet the reconciler does not manage (ipam); "
    "reach the service by its name, which Docker's DNS resolves on the network",
}


def explain_extra(loc: KeyPath, known: list[str]) -> str | None:
    """Message for a refused key that is valid Compose but not supported here.

    ``loc`` is the key's location relative to the top of compose.yaml, as
    pydantic reports it. Used as ``pydantic_issues(..., explain_extra=...)``.
    """
    if not loc:
        return None
    key = str(loc[-1])
    parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
    unsupported: frozenset[str] = frozenset()
    if parent == ():
        unsupported = UNSUPPORTED_TOP_LEVEL
    elif parent[:1] == ("services",):
        rest = parent[2:]
        if rest == ():
            unsupported = UNSUPPORTED_SERVICE
        elif rest == ("build",):
            unsupported = UNSUPPORTED_BUILD
        elif rest == ("volumes",):
            unsupported = UNSUPPORTED_VOLUME_LONG
        elif rest == ("ports",):
            unsupported = UNSUPPORTED_PORT_LONG
        elif rest[:1] == ("networks",):
            unsupported = UNSUPPORTED_SERVICE_NETWORK
        elif (
            rest[:2] == ("deploy", "resources")
            and len(rest) == 3
            and key in (UNSUPPORTED_RESOURCES)
        ):
            return RESOURCES_REASON
    elif parent[:1] == ("networks",):
        unsupported = UNSUPPORTED_NETWORK
        known = [k for k in known if k != "attachable"]  # Swarm's only
    elif parent[:1] in {("secrets",), ("configs",)} and len(parent) == 2 and key in STORE_KEYS:
        content = ", content: inline text" if parent[0] == "configs" else ""
        return f"unsupported key: {STORE_REASON.format(content=content)}"
    if key in unsupported:
        why = f": {WHY_UNSUPPORTED[key]}" if key in WHY_UNSUPPORTED else ""
        return f"unsupported key{why} (the reconciler supports: {', '.join(sorted(known))})"
    return None
