"""Load ``desired-state/compose.yaml`` from a checked-out commit into a ``DesiredState``.

The *validate* step of a pass: read the file, parse it (keeping lines),
interpolate ``${VAR}`` from the environment, validate it against the supported
Compose subset, check what needs the checkout (paths exist and stay inside the
repository, Dockerfiles exist, references resolve, no dependency cycles, no
port clashes), then resolve everything into the values the planner needs:
Docker names, absolute paths, env files read, content hashes of bind-mounted
files and build contexts, the content of each secret and config a service is
granted (a file, a variable, inline text, or an encrypted file decrypted).

Values decrypted from the commit's encrypted files (``model/secrets.py``) come
in as ``secrets``: they fill ``${VAR}`` under the VM's own environment (the
real environment, then the env file, win over git, like Compose's shell over
``.env``), an ``env_file:`` may name an encrypted file, and a label may not
carry a secret (labels are readable by anyone who can list containers).

The reading of a service's environment and of its secrets' and configs'
contents is ``model/content_reading.py``'s, and the hashing of the checkout's
files a service reads (bind mounts, env files, builds) is
``model/checkout_hashing.py``'s: bases of the loader.

Every problem found is collected; the loader raises one ``InvalidDesiredState``
with all of them, each ``PATH:LINE: KEY: message`` with PATH relative to the
repository root. The only I/O is reading the checkout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from reconciler.errors import InvalidDesiredState, Issue
from reconciler.labels import container_name, network_name, volume_name
from reconciler.model import compose_lifecycle, swarm_schema
from reconciler.model import compose_schema as schema
from reconciler.model.checkout_hashing import CheckoutHashing
from reconciler.model.compose_checks import COMPOSE_FILE
from reconciler.model.compose_grants import TopLevelConfig, TopLevelSecret
from reconciler.model.compose_values import ENGINE_MODE
from reconciler.model.desired import (
    AnonymousVolume,
    BuildSpec,
    Dependency,
    DesiredState,
    HealthCheck,
    LogConfig,
    Mount,
    NetworkSpec,
    PortBinding,
    ServiceNetwork,
    ServiceSpec,
    SwarmDeploy,
    Ulimit,
    VolumeSpec,
)
from reconciler.model.engine_mode import EngineMode
from reconciler.model.interpolation import interpolate
from reconciler.model.secrets import Secrets
from reconciler.model.swarm_checks import SwarmChecks, swarm_deploy, swarm_network, swarm_port_mode
from reconciler.model.text_files import decode_text
from reconciler.model.yaml_lines import KeyPath, YamlError, load_yaml, pydantic_issues

_M = TypeVar("_M", bound=BaseModel)


def load_desired_state(
    root: Path,
    *,
    directory: str = "desired-state",
    project: str | None = None,
    environ: Mapping[str, str],
    secrets: Secrets | None = None,
    engine_mode: EngineMode = "engine",
) -> DesiredState:
    """Validate and resolve ``<root>/<directory>/compose.yaml``.

    ``root`` is the checked-out commit; ``project`` (RECONCILER_PROJECT) wins
    over the file's ``name:``; ``environ`` fills ``${VAR}``, bare environment
    keys and ``COMPOSE_PROFILES``; ``secrets`` (the commit's decrypted files)
    fill what ``environ`` does not set. ``engine_mode="swarm"`` validates for a
    Swarm manager (``model/swarm_checks.py``): every service gets its
    ``deploy``, networks are overlay and attachable. Raises
    ``InvalidDesiredState`` with every issue found.
    """
    secrets = secrets or Secrets()
    environ = merge_environ(environ, secrets)
    root = root.absolute()  # bind sources and build contexts must be absolute for Docker
    directory = directory.strip("/") or "."
    rel = COMPOSE_FILE if directory == "." else f"{directory}/{COMPOSE_FILE}"
    compose_dir = root / directory
    if not compose_dir.resolve().is_relative_to(root.resolve()):
        raise InvalidDesiredState(
            [Issue(directory, 0, "", "folder is outside the repository (see RECONCILER_DIR)")]
        )
    if not compose_dir.is_dir():
        raise InvalidDesiredState(
            [Issue(directory, 0, "", "folder not found in the commit (see RECONCILER_DIR)")]
        )
    compose_path = compose_dir / COMPOSE_FILE
    if not compose_path.is_file():
        others = ("compose.yml", "docker-compose.yml", "docker-compose.yaml")
        found = [n for n in others if (compose_dir / n).is_file()]
        hint = f" (rename {found[0]} to {COMPOSE_FILE})" if found else ""
        raise InvalidDesiredState([Issue(rel, 0, "", f"file not found{hint}")])
    text = decode_text(compose_path.read_bytes(), path=rel)
    try:
        data, line_map = load_yaml(text, path=rel, core_schema=True)
    except YamlError as exc:
        raise InvalidDesiredState([exc.issue]) from None
    if data is None:
        raise InvalidDesiredState([Issue(rel, 0, "", "the file is empty: declare services:")])
    loader = _Loader(
        root=root,
        compose_dir=compose_dir,
        line_map=line_map,
        environ=environ,
        engine_mode=engine_mode,
    )
    loader.secrets = secrets
    return loader.load(data, project=project)


def merge_environ(environ: Mapping[str, str], secrets: Secrets) -> dict[str, str]:
    """The VM's variables over git's secrets: the VM always has the last word."""
    return {**secrets.values, **environ}


class _Loader(SwarmChecks, CheckoutHashing):
    """One load: validate (schema, then ``ComposeChecks``, and ``SwarmChecks`` in
    swarm mode), then resolve (what a service is given read by ``ContentReading``,
    the checkout's files it reads hashed by ``CheckoutHashing``)."""

    # Swarm mode: each service's deploy, validated (SwarmChecks._swarm_deploys).
    deploys: Mapping[str, swarm_schema.SwarmDeployConfig]

    # --- the whole load ---------------------------------------------------

    def load(self, data: Any, *, project: str | None) -> DesiredState:
        data, interpolation_issues = interpolate(data, self.environ, line_map=self.line_map)
        self.issues.extend(interpolation_issues)
        self.raw = data if isinstance(data, dict) else {}
        swarm = self.engine_mode == "swarm"
        try:
            schema.ComposeFile.model_validate(data, context=self._context)
        except ValidationError as exc:
            self.issues.extend(
                pydantic_issues(
                    exc,
                    self.line_map,
                    model=schema.ComposeFile,
                    explain_extra=swarm_schema.explain_extra if swarm else schema.explain_extra,
                )
            )
        # Each part again on its own: the parts that are valid still get the
        # checks below, so one commit shows every problem at once.
        services = self._valid_parts("services", schema.Service)
        volumes = self._valid_parts("volumes", schema.Volume)
        networks = self._valid_parts("networks", schema.Network)
        self.granted = {
            "secrets": self._valid_parts("secrets", TopLevelSecret),
            "configs": self._valid_parts("configs", TopLevelConfig),
        }
        project_name = self._project(project)
        active = self._active(services)
        self._check_services(services, volumes, networks, active)
        self.deploys = self._swarm_deploys(services) if swarm else {}
        if swarm:
            self._check_swarm(services, volumes, networks, self.deploys)
        self._check_grants(services)
        self._check_container_names(project_name, services)
        state = self._resolve(project_name or "invalid", services, volumes, networks, active)
        self._check_secret_labels(services, volumes, networks)
        issues = _without_follow_ups(self.issues, interpolation_issues)
        if self.secrets.issues:
            # A file that cannot be decrypted leaves its variables unset: say
            # that once (cannot decrypt), not again at every ${VAR}.
            issues = [i for i in issues if " is not set" not in i.message] + self.secrets.issues
        if issues:
            raise InvalidDesiredState(issues)
        return state

    def _check_secret_labels(
        self,
        services: Mapping[str, schema.Service | None],
        volumes: Mapping[str, schema.Volume | None],
        networks: Mapping[str, schema.Network | None],
    ) -> None:
        secret_values = self.secrets.secret_values()
        if not secret_values:
            return
        sections: list[tuple[str, Mapping[str, Any]]] = [
            ("services", services),
            ("volumes", volumes),
            ("networks", networks),
        ]
        for section, parts in sections:
            for name, part in parts.items():
                labels = getattr(part, "labels", None) or {}
                for key, value in labels.items():
                    if any(secret and secret in str(value) for secret in secret_values):
                        self.add(
                            (section, name, "labels", key),
                            "holds a value from an encrypted file: labels are readable by "
                            "anyone who can list containers; pass secrets in environment",
                        )

    @property
    def _context(self) -> dict[str, str]:
        """The schema's validation context: which engine the file is for."""
        return {ENGINE_MODE: self.engine_mode}

    def _valid_parts(self, section: str, model: type[_M]) -> dict[str, _M | None]:
        raw = self.raw.get(section)
        if not isinstance(raw, dict):
            return {}
        out: dict[str, _M | None] = {}
        for key, value in raw.items():
            if value is None and section != "services":
                out[str(key)] = None
                continue
            try:
                out[str(key)] = model.model_validate(value, context=self._context)
            except ValidationError as exc:
                # Already reported by the whole-file validation. Without the
                # keys in error, the rest of the part may still be checked.
                self.partial.add((section, str(key)))
                bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
                if not isinstance(value, dict) or not bad:
                    continue
                try:
                    out[str(key)] = model.model_validate(
                        {k: v for k, v in value.items() if k not in bad}, context=self._context
                    )
                except ValidationError:
                    continue
        return out

    # --- resolution -------------------------------------------------------------

    def _resolve(
        self,
        project: str,
        services: Mapping[str, schema.Service | None],
        volumes: Mapping[str, schema.Volume | None],
        networks: Mapping[str, schema.Network | None],
        active: set[str],
    ) -> DesiredState:
        volume_specs = {key: _volume_spec(project, key, vol) for key, vol in volumes.items()}
        network_specs = {
            key: _network_spec(project, key, net)
            for key, net in networks.items()
            if key != "default"
        }
        default_network = _network_spec(project, "default", networks.get("default"))
        if self.engine_mode == "swarm":
            network_specs = {
                key: swarm_network(spec, networks.get(key)) for key, spec in network_specs.items()
            }
            default_network = swarm_network(default_network, networks.get("default"))
        self.mount_points = self._mount_points(services, active)
        specs: dict[str, ServiceSpec] = {}
        uses_default = False
        containers = {
            name: svc.container_name or container_name(project, name)
            for name, svc in services.items()
            if svc is not None
        }
        for name, svc in services.items():
            if svc is None or name not in active:
                continue
            service_networks: list[ServiceNetwork] = []
            # network_mode: the container joins no network of its own.
            joined = {} if svc.network_mode else (svc.networks or {"default": None})
            for key, options in joined.items():
                spec = default_network if key == "default" else network_specs.get(key)
                uses_default = uses_default or key == "default"
                if spec is not None:
                    aliases = tuple(options.aliases) if options else ()
                    service_networks.append(ServiceNetwork(name=spec.name, aliases=aliases))
            specs[name] = self._service_spec(
                project,
                name,
                svc,
                volume_specs=volume_specs,
                networks=service_networks,
                active=active,
                containers=containers,
            )
        all_networks = dict(network_specs)
        if uses_default:
            all_networks = {"default": default_network, **network_specs}
        return DesiredState(
            project=project,
            services=specs,
            networks=all_networks,
            volumes=volume_specs,
            service_lines={name: self.line_map.line_of(("services", name)) for name in specs},
            compose_path=self.line_map.path,
            engine_mode=self.engine_mode,
        )

    def _service_spec(
        self,
        project: str,
        name: str,
        svc: schema.Service,
        *,
        volume_specs: Mapping[str, VolumeSpec],
        networks: list[ServiceNetwork],
        active: set[str],
        containers: Mapping[str, str],
    ) -> ServiceSpec:
        base: KeyPath = ("services", name)
        build: BuildSpec | None = None
        build_sources: dict[str, str] = {}
        image = svc.image
        if svc.build is not None:
            build, build_sources = self._build_spec(base, svc.build)
            if image is None and build is not None:
                image = f"{project}-{name.lower()}:{build.context_hash[:12]}"
        swarm = self.engine_mode == "swarm"
        ports = tuple(
            PortBinding(
                target=target,
                published=host,
                host_ip=port.host_ip,
                protocol=port.protocol,
                mode=swarm_port_mode(port) if swarm else None,
            )
            for port in svc.ports
            for host, target in port.expanded()
        )
        deploy: SwarmDeploy | None = None
        if swarm:
            deploy = swarm_deploy(self.deploys.get(name) or swarm_schema.SwarmDeployConfig(), ports)
        mounts = tuple(self._mounts(base, svc, volume_specs))
        # A dependency that is not deployed (``required: false`` on a
        # service whose profiles are inactive) is no dependency at all.
        depends = {
            dep: Dependency(service=dep, condition=options.condition, restart=options.restart)
            for dep, options in svc.depends_on.items()
            if dep in active
        }
        network_mode = svc.network_mode
        shared = _network_service(network_mode)
        if shared is not None:
            # As Compose: the container joins the other's network namespace, so
            # that one is created first, and a recreate of it (a new namespace)
            # recreates this one after it.
            known = depends.get(shared) or Dependency(service=shared)
            depends[shared] = known.model_copy(update={"restart": True})
            network_mode = f"container:{containers.get(shared, shared)}"
        return ServiceSpec(
            name=name,
            image=image or "",
            build=build,
            pull_policy=svc.pull_policy,
            command=tuple(svc.command) if svc.command is not None else None,
            entrypoint=tuple(svc.entrypoint) if svc.entrypoint is not None else None,
            environment=self._environment(base, svc),
            ports=ports,
            mounts=mounts,
            networks=tuple(networks),
            depends_on=tuple(depends.values()),
            healthcheck=_health(svc.healthcheck),
            restart=svc.restart,
            labels=dict(svc.labels),
            user=svc.user,
            working_dir=svc.working_dir,
            hostname=svc.hostname,
            stop_grace_period_s=10.0 if svc.stop_grace_period is None else svc.stop_grace_period,
            anonymous_volumes=tuple(
                AnonymousVolume(target=volume.target, read_only=volume.read_only)
                for volume in svc.volumes
                if volume.anonymous
            ),
            secrets=self._grants("secrets", svc.secrets),
            configs=self._grants("configs", svc.configs),
            expose=tuple(
                dict.fromkeys(
                    f"{port}/{protocol}"
                    for first, last, protocol in svc.expose
                    for port in range(first, last + 1)
                )
            ),
            stop_signal=svc.stop_signal,
            cap_add=tuple(svc.cap_add),
            cap_drop=tuple(svc.cap_drop),
            init=svc.init,
            tmpfs=tuple(svc.tmpfs),
            shm_size=svc.shm_size,
            extra_hosts=tuple(f"{host}:{ip}" for host, ip in svc.extra_hosts),
            read_only=svc.read_only,
            security_opt=tuple(svc.security_opt),
            ulimits=tuple(
                Ulimit(name=key, soft=limit.soft, hard=limit.hard)
                for key, limit in sorted(svc.ulimits.items())
            ),
            sysctls=dict(svc.sysctls),
            logging=(
                None
                if svc.logging is None
                else LogConfig(driver=svc.logging.driver or "", options=dict(svc.logging.options))
            ),
            **self._resources(base, svc),
            stdin_open=svc.stdin_open,
            tty=svc.tty,
            network_mode=network_mode,
            container_name=svc.container_name,
            deploy=deploy,
            secret_values=frozenset(v for v in self.secrets.secret_values() if v),
            sources={**self._sources(svc, mounts), **build_sources},
        )

    def _resources(self, base: KeyPath, svc: schema.Service) -> dict[str, Any]:
        """mem_limit, mem_reservation, cpus, pids_limit, each from its service key or
        its ``deploy.resources`` form; both set to different values is an error."""
        resources = svc.deploy.resources if svc.deploy is not None else None
        limits = resources.limits if resources is not None else None
        reservations = resources.reservations if resources is not None else None
        pairs: list[tuple[str, Any, tuple[str, ...], Any]] = [
            ("mem_limit", svc.mem_limit, ("limits", "memory"), limits and limits.memory),
            (
                "mem_reservation",
                svc.mem_reservation,
                ("reservations", "memory"),
                reservations and reservations.memory,
            ),
            ("cpus", svc.cpus, ("limits", "cpus"), limits and limits.cpus),
            ("pids_limit", svc.pids_limit, ("limits", "pids"), limits and limits.pids),
        ]
        out: dict[str, Any] = {}
        for key, plain, deploy_key, deployed in pairs:
            if plain is not None and deployed is not None and plain != deployed:
                where = (*base, "deploy", "resources", *deploy_key)
                self.add(
                    where,
                    f"differs from {key} (line {self.line_map.line_of((*base, key))}): "
                    "set one of the two, or give both the same value",
                )
            out[key] = plain if plain is not None else deployed
        return out

    def _mounts(
        self, base: KeyPath, svc: schema.Service, volume_specs: Mapping[str, VolumeSpec]
    ) -> list[Mount]:
        mounts: list[Mount] = []
        for volume in svc.volumes:
            source = volume.source or ""
            if volume.anonymous:
                continue  # ServiceSpec.anonymous_volumes
            if volume.type == "volume":
                spec = volume_specs.get(source)
                if spec is None:
                    continue  # reported by the checks
                mounts.append(
                    Mount(
                        type="volume",
                        source=spec.name,
                        target=volume.target,
                        read_only=volume.read_only,
                    )
                )
            elif os.path.isabs(source):
                mounts.append(
                    Mount(
                        type="bind", source=source, target=volume.target, read_only=volume.read_only
                    )
                )
            else:
                path = Path(os.path.normpath(self.compose_dir / source))
                if not (path.exists() or path.is_symlink()) or not self._inside(path):
                    continue  # reported by the checks
                mounts.append(
                    Mount(
                        type="bind",
                        source=str(path),
                        target=volume.target,
                        read_only=volume.read_only,
                        # Docker follows a symlink given as the source; so does the hash.
                        content_hash=self._hash(path.resolve()),
                    )
                )
        return mounts


def _network_service(network_mode: str | None) -> str | None:
    """NAME of ``network_mode: service:NAME``, else None."""
    if network_mode is None or not network_mode.startswith("service:"):
        return None
    return network_mode.removeprefix("service:")


def _volume_spec(project: str, key: str, volume: schema.Volume | None) -> VolumeSpec:
    if volume is None:
        return VolumeSpec(key=key, name=volume_name(project, key))
    if volume.external:
        return VolumeSpec(key=key, name=volume.name or key, external=True)
    return VolumeSpec(
        key=key,
        name=volume.name or volume_name(project, key),
        driver=volume.driver or "local",
        driver_opts=dict(volume.driver_opts),
        labels=dict(volume.labels),
    )


def _network_spec(project: str, key: str, network: schema.Network | None) -> NetworkSpec:
    if network is None:
        return NetworkSpec(key=key, name=network_name(project, key))
    if network.external:
        return NetworkSpec(key=key, name=network.name or key, external=True)
    return NetworkSpec(
        key=key,
        name=network.name or network_name(project, key),
        driver=network.driver or "bridge",
        internal=network.internal,
        labels=dict(network.labels),
    )


def _health(check: compose_lifecycle.HealthCheck | None) -> HealthCheck | None:
    if check is None:
        return None
    if check.disable or check.test == ["NONE"]:
        return HealthCheck(test=("NONE",))
    assert check.test is not None  # the schema requires test unless disabled
    # Zero means "Docker's default" to the engine too.
    return HealthCheck(
        test=tuple(check.test),
        interval_s=check.interval or 30.0,
        timeout_s=check.timeout or 30.0,
        retries=3 if check.retries is None else check.retries,
        start_period_s=check.start_period or 0.0,
    )


def _without_follow_ups(issues: list[Issue], interpolation: list[Issue]) -> list[Issue]:
    """Drop errors caused by a value whose interpolation already failed (it became "")."""
    failed = {i.key for i in interpolation}
    kept: list[Issue] = []
    for issue in issues:
        follow_up = issue not in interpolation and any(
            issue.key == key or issue.key.startswith((f"{key}.", f"{key}[")) for key in failed
        )
        if not follow_up:
            kept.append(issue)
    return kept
