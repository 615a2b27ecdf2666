"""Load ``desired-state/compose.yaml`` from a checked-out commit into a ``DesiredState``.

The *validate* step of a pass: read the file, parse it (keeping lines),
interpolate ``${VAR}`` from the environment, validate it against the supported
Compose subset, check what needs the checkout (paths exist and stay inside the
repository, Dockerfiles exist, references resolve, no dependency cycles, no
port clashes), then resolve everything into the values the planner needs:
Docker names, absolute paths, env files read, content hashes of bind-mounted
files and build contexts.

Every problem found is collected; the loader raises one ``InvalidDesiredState``
with all of them, each ``PATH:LINE: KEY: message`` with PATH relative to the
repository root. The only I/O is reading the checkout.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError

from reconciler import labels as labels_module
from reconciler.errors import InvalidDesiredState, Issue
from reconciler.labels import network_name, volume_name
from reconciler.model import compose_schema as schema
from reconciler.model.desired import (
    BuildSpec,
    Dependency,
    DesiredState,
    HealthCheck,
    Mount,
    NetworkSpec,
    PortBinding,
    ServiceNetwork,
    ServiceSpec,
    VolumeSpec,
)
from reconciler.model.files import hash_path
from reconciler.model.interpolation import ENV_FILE_HINT, interpolate
from reconciler.model.yaml_lines import KeyPath, LineMap, YamlError, load_yaml, pydantic_issues

COMPOSE_FILE = "compose.yaml"
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DOCKER_NAME = _SERVICE_NAME  # volume and network names, as Docker accepts them
_M = TypeVar("_M", bound=BaseModel)
_PROJECT_RULE = "use lowercase letters, digits, '-' and '_', starting with a letter or a digit"


def load_desired_state(
    root: Path,
    *,
    directory: str = "desired-state",
    project: str | None = None,
    environ: Mapping[str, str],
) -> DesiredState:
    """Validate and resolve ``<root>/<directory>/compose.yaml``.

    ``root`` is the checked-out commit; ``project`` (RECONCILER_PROJECT) wins
    over the file's ``name:``; ``environ`` fills ``${VAR}``, bare environment
    keys and ``COMPOSE_PROFILES``. Raises ``InvalidDesiredState`` with every
    issue found.
    """
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
        others = [n for n in ("compose.yml", "docker-compose.yml", "docker-compose.yaml")]
        found = [n for n in others if (compose_dir / n).is_file()]
        hint = f" (rename {found[0]} to {COMPOSE_FILE})" if found else ""
        raise InvalidDesiredState([Issue(rel, 0, "", f"file not found{hint}")])
    try:
        text = compose_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidDesiredState([Issue(rel, 0, "", "not a UTF-8 text file")]) from None
    try:
        data, line_map = load_yaml(text, path=rel, core_schema=True)
    except YamlError as exc:
        raise InvalidDesiredState([exc.issue]) from None
    if data is None:
        raise InvalidDesiredState([Issue(rel, 0, "", "the file is empty: declare services:")])
    loader = _Loader(root=root, compose_dir=compose_dir, line_map=line_map, environ=environ)
    return loader.load(data, project=project)


class _Loader:
    """One load: the state shared by the checks and the resolution, and the issues found."""

    def __init__(
        self, *, root: Path, compose_dir: Path, line_map: LineMap, environ: Mapping[str, str]
    ) -> None:
        self.root = root
        self.compose_dir = compose_dir
        self.line_map = line_map
        self.environ = environ
        self.issues: list[Issue] = []
        self.raw: dict[str, Any] = {}
        # (section, key) of parts with schema errors, checked without their bad keys.
        self.partial: set[tuple[str, str]] = set()

    def add(self, key_path: KeyPath, message: str) -> None:
        self.issues.append(self.line_map.issue(key_path, message))

    # --- the whole load ---------------------------------------------------

    def load(self, data: Any, *, project: str | None) -> DesiredState:
        data, interpolation_issues = interpolate(data, self.environ, line_map=self.line_map)
        self.issues.extend(interpolation_issues)
        self.raw = data if isinstance(data, dict) else {}
        try:
            schema.ComposeFile.model_validate(data)
        except ValidationError as exc:
            self.issues.extend(
                pydantic_issues(
                    exc,
                    self.line_map,
                    model=schema.ComposeFile,
                    explain_extra=schema.explain_extra,
                )
            )
        # Each part again on its own: the parts that are valid still get the
        # checks below, so one commit shows every problem at once.
        services = self._valid_parts("services", schema.Service)
        volumes = self._valid_parts("volumes", schema.Volume)
        networks = self._valid_parts("networks", schema.Network)
        project_name = self._project(project)
        active = self._active(services)
        self._check_services(services, volumes, networks, active)
        state = self._resolve(project_name or "invalid", services, volumes, networks, active)
        issues = _without_follow_ups(self.issues, interpolation_issues)
        if issues:
            raise InvalidDesiredState(issues)
        return state

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
                out[str(key)] = model.model_validate(value)
            except ValidationError as exc:
                # Already reported by the whole-file validation. Without the
                # keys in error, the rest of the part may still be checked.
                self.partial.add((section, str(key)))
                bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
                if not isinstance(value, dict) or not bad:
                    continue
                try:
                    out[str(key)] = model.model_validate(
                        {k: v for k, v in value.items() if k not in bad}
                    )
                except ValidationError:
                    continue
        return out

    # --- checks ---------------------------------------------------------------

    def _project(self, given: str | None) -> str | None:
        if given:
            if not _PROJECT_NAME.fullmatch(given):
                self.issues.append(
                    Issue(
                        self.line_map.path,
                        0,
                        "",
                        f"project name {given!r} (RECONCILER_PROJECT) is invalid: {_PROJECT_RULE}",
                    )
                )
                return None
            return given
        name = self.raw.get("name")
        if name is None or name == "":
            self.issues.append(
                Issue(
                    self.line_map.path,
                    0,
                    "",
                    "no project name: set RECONCILER_PROJECT on the VM or name: at the top "
                    f"of {COMPOSE_FILE}",
                )
            )
            return None
        if not isinstance(name, str) or not _PROJECT_NAME.fullmatch(name):
            self.add(("name",), f"invalid project name {name!r}: {_PROJECT_RULE}")
            return None
        return name

    def _active(self, services: Mapping[str, schema.Service | None]) -> set[str]:
        """Services whose profiles are active (COMPOSE_PROFILES, as in Compose)."""
        wanted = {p.strip() for p in self.environ.get("COMPOSE_PROFILES", "").split(",")}
        wanted.discard("")
        return {
            name
            for name, svc in services.items()
            if svc is not None and (not svc.profiles or "*" in wanted or wanted & set(svc.profiles))
        }

    def _check_services(
        self,
        services: Mapping[str, schema.Service | None],
        volumes: Mapping[str, schema.Volume | None],
        networks: Mapping[str, schema.Network | None],
        active: set[str],
    ) -> None:
        raw_services = self.raw.get("services")
        all_names = [str(n) for n in raw_services] if isinstance(raw_services, dict) else []
        raw_volumes = self.raw.get("volumes")
        declared_volumes = {str(k) for k in raw_volumes} if isinstance(raw_volumes, dict) else set()
        raw_networks = self.raw.get("networks")
        declared_networks = (
            {str(k) for k in raw_networks} if isinstance(raw_networks, dict) else set()
        )
        published: dict[tuple[int, str, str], tuple[str, int]] = {}
        for name, svc in services.items():
            base: KeyPath = ("services", name)
            if not _SERVICE_NAME.fullmatch(name):
                self.add(base, "invalid service name: use letters, digits, '.', '-' and '_'")
            if svc is None:
                continue
            if svc.image is None and svc.build is None and ("services", name) not in self.partial:
                self.add(base, "needs image or build (neither is set)")
            self._check_depends(name, svc, services, all_names, active)
            self._check_volumes(name, svc, declared_volumes)
            for net in svc.networks or {}:
                if net != "default" and net not in declared_networks:
                    self.add(
                        self._entry(base, "networks", net),
                        f"network {net!r} is not declared under the top-level networks: key "
                        f"(add '{net}:' there)",
                    )
            if svc.build is not None:
                self._check_build(base, svc.build)
            self._check_labels(base, svc.labels)
            for index, env_file in enumerate(svc.env_file):
                self._repo_path(
                    env_file.path,
                    self._list_item(base, "env_file", index),
                    what="env_file",
                    required=env_file.required,
                    kind="file",
                )
            if name in active:
                self._check_ports(name, svc, published)
        self._check_cycles(services)
        self._check_top_level(volumes, networks)

    def _check_top_level(
        self,
        volumes: Mapping[str, schema.Volume | None],
        networks: Mapping[str, schema.Network | None],
    ) -> None:
        parts: list[tuple[str, str, schema.Volume | schema.Network | None]] = [
            *(("volumes", key, part) for key, part in volumes.items()),
            *(("networks", key, part) for key, part in networks.items()),
        ]
        for section, key, part in parts:
            docker_name = part.name if part is not None and part.name is not None else key
            if not _DOCKER_NAME.fullmatch(docker_name):
                named = part is not None and part.name is not None
                self.add(
                    (section, key, "name") if named else (section, key),
                    f"invalid name {docker_name!r}: use letters, digits, '.', '-' and '_', "
                    "starting with a letter or a digit",
                )
            if part is not None:
                self._check_labels((section, key), part.labels)

    def _check_labels(self, base: KeyPath, labels: Mapping[str, str]) -> None:
        for key in labels:
            if key.startswith(f"{labels_module.PREFIX}."):
                self.add(
                    self._entry(base, "labels", key),
                    f"label {key!r}: labels starting with {labels_module.PREFIX}. are the "
                    "reconciler's own (they mark what it owns); choose another name",
                )

    def _list_item(self, base: KeyPath, key: str, index: int) -> KeyPath:
        """Item ``index`` of ``base.key`` when written as a list, else ``base.key`` itself."""
        if isinstance(self._raw_at((*base, key)), list):
            return (*base, key, index)
        return (*base, key)

    def _raw_at(self, key_path: KeyPath) -> Any:
        node: Any = self.raw
        for part in key_path:
            found = (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node)
            )
            if not found:
                return None
            node = node[part]
        return node

    def _entry(self, base: KeyPath, key: str, name: str) -> KeyPath:
        """Where ``name`` is written under ``base.key``: a mapping key or a list item."""
        raw = self._raw_at((*base, key))
        if isinstance(raw, list):
            for index, item in enumerate(raw):
                if item == name or (isinstance(item, str) and item.startswith(f"{name}=")):
                    return (*base, key, index)
            return (*base, key)
        return (*base, key, name)

    def _check_depends(
        self,
        name: str,
        svc: schema.Service,
        services: Mapping[str, schema.Service | None],
        all_names: list[str],
        active: set[str],
    ) -> None:
        base: KeyPath = ("services", name)
        for dep, options in svc.depends_on.items():
            where = self._entry(base, "depends_on", dep)
            if dep not in all_names:
                close = difflib.get_close_matches(dep, all_names, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.add(where, f"depends on unknown service {dep!r}{hint}")
                continue
            target = services.get(dep)
            if name in active and dep not in active and target is not None and options.required:
                profiles = ", ".join(target.profiles)
                self.add(
                    where,
                    f"depends on {dep!r}, whose profiles ({profiles}) are not active: add one "
                    "to COMPOSE_PROFILES on the VM, or remove the dependency",
                )

    def _check_cycles(self, services: Mapping[str, schema.Service | None]) -> None:
        graph = {
            name: [d for d in svc.depends_on if d in services]
            for name, svc in services.items()
            if svc is not None
        }
        reported: set[frozenset[str]] = set()
        done: set[str] = set()

        def visit(node: str, stack: list[str]) -> None:
            if node in stack:
                cycle = [*stack[stack.index(node) :], node]
                members = frozenset(cycle)
                if members not in reported:
                    reported.add(members)
                    first = cycle[0]
                    self.add(
                        self._entry(("services", first), "depends_on", cycle[1]),
                        f"dependency cycle: {' -> '.join(cycle)}",
                    )
                return
            if node in done:
                return
            stack.append(node)
            for dep in graph.get(node, []):
                visit(dep, stack)
            stack.pop()
            done.add(node)

        for name in graph:
            visit(name, [])

    def _check_volumes(self, name: str, svc: schema.Service, declared: set[str]) -> None:
        for index, volume in enumerate(svc.volumes):
            where: KeyPath = ("services", name, "volumes", index)
            assert volume.source is not None  # the schema refuses anonymous volumes
            if volume.type == "volume":
                if volume.source not in declared:
                    self.add(
                        where,
                        f"volume {volume.source!r} is not declared under the top-level "
                        f"volumes: key (add '{volume.source}:' there)",
                    )
            elif not os.path.isabs(volume.source):
                self._repo_path(volume.source, where, what="bind source", kind="any")

    def _check_build(self, base: KeyPath, build: schema.Build) -> None:
        where: KeyPath = (*base, "build")
        if "://" in build.context or build.context.startswith("git@"):
            self.add(where, "build context must be a folder in the repository, not a URL")
            return
        if os.path.isabs(build.context):
            self.add(where, "build context must be a path relative to compose.yaml")
            return
        context = self._repo_path(build.context, where, what="build context", kind="dir")
        if context is None:
            return
        raw_build = self._raw_at(where)
        has_key = isinstance(raw_build, dict) and "dockerfile" in raw_build
        dockerfile_where = (*where, "dockerfile") if has_key else where
        self._repo_path(
            os.path.join(os.path.relpath(context, self.compose_dir), build.dockerfile),
            dockerfile_where,
            what="Dockerfile",
            kind="file",
            shown=build.dockerfile,
        )

    def _repo_path(
        self,
        value: str,
        where: KeyPath,
        *,
        what: str,
        kind: str,
        required: bool = True,
        shown: str | None = None,
    ) -> Path | None:
        """Check a path relative to compose.yaml: inside the repository, present in the commit.

        Returns the normalised absolute path, or None after adding an issue.
        """
        shown = value if shown is None else shown
        if os.path.isabs(value):
            self.add(where, f"{what} {shown!r} must be a path relative to compose.yaml")
            return None
        candidate = Path(os.path.normpath(self.compose_dir / value))
        if not candidate.resolve().is_relative_to(self.root.resolve()):
            self.add(where, f"{what} {shown!r} leaves the repository: use a path inside it")
            return None
        in_repo = os.path.relpath(candidate, self.root)
        exists = {
            "file": candidate.is_file(),
            "dir": candidate.is_dir(),
            "any": candidate.exists() or candidate.is_symlink(),
        }[kind]
        if not exists:
            if not required and not candidate.exists():
                return None
            noun = {"file": "file", "dir": "folder", "any": "path"}[kind]
            self.add(where, f"{what} {shown!r}: {noun} {in_repo} does not exist in the commit")
            return None
        return candidate

    def _check_ports(
        self,
        name: str,
        svc: schema.Service,
        published: dict[tuple[int, str, str], tuple[str, int]],
    ) -> None:
        for index, port in enumerate(svc.ports):
            where: KeyPath = ("services", name, "ports", index)
            for host_port, _target in port.expanded():
                if host_port is None:
                    continue
                clashes = [
                    owner
                    for (p, ip, proto), owner in published.items()
                    if p == host_port
                    and proto == port.protocol
                    and (ip == port.host_ip or "" in (ip, port.host_ip))
                ]
                if clashes:
                    other, line = clashes[0]
                    self.add(
                        where,
                        f"host port {host_port}/{port.protocol} is already published by "
                        f"service {other!r} (line {line})",
                    )
                    break
                published[(host_port, port.host_ip, port.protocol)] = (
                    name,
                    self.line_map.line_of(where),
                )

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
        specs: dict[str, ServiceSpec] = {}
        uses_default = False
        for name, svc in services.items():
            if svc is None or name not in active:
                continue
            service_networks: list[ServiceNetwork] = []
            for key, options in (svc.networks or {"default": None}).items():
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
    ) -> ServiceSpec:
        base: KeyPath = ("services", name)
        build: BuildSpec | None = None
        image = svc.image
        if svc.build is not None:
            build = self._build_spec(base, svc.build)
            if image is None and build is not None:
                image = f"{project}-{name.lower()}:{build.context_hash[:12]}"
        ports = tuple(
            PortBinding(target=target, published=host, host_ip=port.host_ip, protocol=port.protocol)
            for port in svc.ports
            for host, target in port.expanded()
        )
        return ServiceSpec(
            name=name,
            image=image or "",
            build=build,
            pull_policy=svc.pull_policy,
            command=tuple(svc.command) if svc.command is not None else None,
            entrypoint=tuple(svc.entrypoint) if svc.entrypoint is not None else None,
            environment=self._environment(base, svc),
            ports=ports,
            mounts=tuple(self._mounts(base, svc, volume_specs)),
            networks=tuple(networks),
            # A dependency that is not deployed (``required: false`` on a
            # service whose profiles are inactive) is no dependency at all.
            depends_on=tuple(
                Dependency(service=dep, condition=options.condition)
                for dep, options in svc.depends_on.items()
                if dep in active
            ),
            healthcheck=_health(svc.healthcheck),
            restart=svc.restart,
            labels=dict(svc.labels),
            user=svc.user,
            working_dir=svc.working_dir,
            hostname=svc.hostname,
            stop_grace_period_s=10.0 if svc.stop_grace_period is None else svc.stop_grace_period,
        )

    def _build_spec(self, base: KeyPath, build: schema.Build) -> BuildSpec | None:
        context = Path(os.path.normpath(self.compose_dir / build.context))
        if not context.is_dir():
            return None  # reported by the checks
        args: dict[str, str] = {}
        for key, value in build.args.items():
            resolved = self._from_environ(self._entry((*base, "build"), "args", key), key, value)
            if resolved is not None:
                args[key] = resolved
        return BuildSpec(
            context=str(context),
            dockerfile=build.dockerfile,
            args=args,
            target=build.target,
            context_hash=hash_path(context),
        )

    def _from_environ(self, where: KeyPath, key: str, value: str | None) -> str | None:
        """A value, or for a bare key the variable of the same name (an error when unset)."""
        if value is not None:
            return value
        from_env = self.environ.get(key)
        if from_env is None:
            self.add(
                where,
                f"variable {key} is not set (set it in the env file on the VM, {ENV_FILE_HINT}, "
                f"or write a value: {key}=...)",
            )
        return from_env

    def _environment(self, base: KeyPath, svc: schema.Service) -> dict[str, str]:
        env: dict[str, str] = {}
        for index, env_file in enumerate(svc.env_file):
            path = Path(os.path.normpath(self.compose_dir / env_file.path))
            if not path.is_file():
                continue  # reported by the checks, or optional
            where = self._list_item(base, "env_file", index)
            # interpolate=False: values are taken literally, never filled from
            # the reconciler's own process environment.
            for key, value in dotenv_values(path, interpolate=False).items():
                resolved = self._from_environ(where, key, value)
                if resolved is not None:
                    env[key] = resolved
        for key, value in svc.environment.items():
            resolved = self._from_environ(self._entry(base, "environment", key), key, value)
            if resolved is not None:
                env[key] = resolved
        return env

    def _mounts(
        self, base: KeyPath, svc: schema.Service, volume_specs: Mapping[str, VolumeSpec]
    ) -> list[Mount]:
        mounts: list[Mount] = []
        for volume in svc.volumes:
            source = volume.source or ""
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
                if not (path.exists() or path.is_symlink()):
                    continue  # reported by the checks
                mounts.append(
                    Mount(
                        type="bind",
                        source=str(path),
                        target=volume.target,
                        read_only=volume.read_only,
                        # Docker follows a symlink given as the source; so does the hash.
                        content_hash=hash_path(path.resolve()),
                    )
                )
        return mounts


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


def _health(check: schema.HealthCheck | None) -> HealthCheck | None:
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
