"""Checks of compose.yaml that need more than its schema: references, cycles, the checkout.

Part of the *validate* step (``model/loading.py`` drives it): after the schema
has accepted the parts it can, these checks look across services (depends_on
names and cycles, published ports), against the top-level declarations
(volumes, networks, secrets, configs), and against the checked-out commit
(bind sources, build contexts, Dockerfiles, env files and the files of
secrets and configs exist and stay inside the repository).
Each problem becomes an ``Issue`` with file, line and key; none stops the
others. Reads the checkout only to see whether paths exist.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from reconciler import labels as labels_module
from reconciler.errors import Issue
from reconciler.model import compose_schema as schema
from reconciler.model.compose_grants import ServiceFileGrant, TopLevelFile
from reconciler.model.compose_runtime import ULIMIT_NAMES
from reconciler.model.engine_mode import EngineMode
from reconciler.model.yaml_lines import KeyPath, LineMap

COMPOSE_FILE = "compose.yaml"
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DOCKER_NAME = _SERVICE_NAME  # volume and network names, as Docker accepts them
# Addresses that bind every interface: they clash with any other address.
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
# The two top-level sections whose entries services are granted as files.
GrantSection = Literal["secrets", "configs"]
_PROJECT_RULE = "use lowercase letters, digits, '-' and '_', starting with a letter or a digit"


def _reserved_name(project: str, name: str) -> str | None:
    """Why ``name`` is one the reconciler gives its own containers, or None."""
    if name.startswith((f"{project}-helper-", f"{project}-drill-")):
        return "is a name the reconciler gives its helper containers (backups, restores, drills)"
    if name.endswith("-self-update"):
        return "is a name the reconciler gives the helper that updates it"
    if re.search(r"-old-[0-9a-f]{12}$", name):
        return "is a name the reconciler gives a container set aside during a recreate"
    return None


class ComposeChecks:
    """The state of one load shared by the checks and the resolution, and the issues found."""

    def __init__(
        self,
        *,
        root: Path,
        compose_dir: Path,
        line_map: LineMap,
        environ: Mapping[str, str],
        engine_mode: EngineMode = "engine",
    ) -> None:
        self.root = root
        self.engine_mode = engine_mode
        self.compose_dir = compose_dir
        self.line_map = line_map
        self.environ = environ
        self.issues: list[Issue] = []
        self.raw: dict[str, Any] = {}
        # (section, key) of parts with schema errors, checked without their bad keys.
        self.partial: set[tuple[str, str]] = set()
        # The top-level secrets and configs the schema accepted, and their contents once read.
        self.granted: dict[GrantSection, Mapping[str, TopLevelFile | None]] = {
            "secrets": {},
            "configs": {},
        }
        self.grant_contents: dict[tuple[GrantSection, str], tuple[bytes, bool] | None] = {}

    def add(self, key_path: KeyPath, message: str) -> None:
        self.issues.append(self.line_map.issue(key_path, message))

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
            if name in active and svc.network_mode is None:
                # With a network mode, ports are refused (below), not published.
                self._check_ports(name, svc, published)
            self._check_runtime(base, svc)
            self._check_network_mode(name, svc, services, all_names, active)
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

    def _check_grants(self, services: Mapping[str, schema.Service | None]) -> None:
        """Top-level secrets and configs (names, files), and what services are granted:
        declared names, targets used once per container."""
        sections: tuple[GrantSection, ...] = ("secrets", "configs")
        for section in sections:
            singular = section[:-1]
            for key, declared in self.granted[section].items():
                if not _DOCKER_NAME.fullmatch(key):
                    # The name becomes a file name when no target is given.
                    self.add(
                        (section, key),
                        f"invalid {singular} name {key!r}: use letters, digits, '.', '-' and "
                        "'_', starting with a letter or a digit",
                    )
                if declared is not None and declared.file is not None:
                    self._repo_path(
                        declared.file, (section, key, "file"), what=f"{singular} file", kind="file"
                    )
        for name, svc in services.items():
            if svc is None:
                continue
            base: KeyPath = ("services", name)
            used: dict[str, tuple[str, int]] = {}
            copied = self.engine_mode == "engine"  # Swarm mounts them itself
            if copied and svc.read_only and (svc.secrets or svc.configs):
                # Docker refuses to copy files into a read-only root file system,
                # and a bind from the host would put decrypted secrets on its disk.
                self.add(
                    (*base, "read_only"),
                    "read_only: true cannot be combined with secrets or configs: the "
                    "reconciler copies them into the container's file system before it "
                    "starts, which a read-only one refuses; drop read_only, or pass the "
                    "value as an environment variable",
                )
            for section in sections:
                raw = self.raw.get(section)
                declared_keys = {str(k) for k in raw} if isinstance(raw, dict) else set()
                singular = section[:-1]
                for index, grant in enumerate(getattr(svc, section)):
                    where: KeyPath = (*base, section, index)
                    if grant.source not in declared_keys:
                        close = difflib.get_close_matches(grant.source, declared_keys, n=1)
                        hint = f"; did you mean '{close[0]}'?" if close else ""
                        self.add(
                            where,
                            f"{singular} {grant.source!r} is not declared under the top-level "
                            f"{section}: key (add '{grant.source}:' there with file: or "
                            f"environment:){hint}",
                        )
                    target = grant_target(section, grant)
                    self._check_grant_outside_volumes(where, target, svc)
                    earlier = used.get(target)
                    if earlier is not None:
                        other, line = earlier
                        self.add(
                            where,
                            f"target {target} is already used by {other} (line {line}): "
                            "give each secret and config its own target",
                        )
                    else:
                        used[target] = (f"{section}[{index}]", self.line_map.line_of(where))

    def _check_grant_outside_volumes(
        self, where: KeyPath, target: str, svc: schema.Service
    ) -> None:
        """The files are written into the container before it starts: under a mount
        they would land in the volume or the host folder (a decrypted secret on disk)."""
        for index, volume in enumerate(svc.volumes):
            mounted = os.path.normpath(volume.target)
            if target == mounted or target.startswith(f"{mounted.rstrip('/')}/"):
                self.add(
                    where,
                    f"target {target} is inside volumes[{index}] (mounted at {mounted}): "
                    "the file would be written into that volume; choose a target outside it",
                )
                return

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

    def _check_runtime(self, base: KeyPath, svc: schema.Service) -> None:
        for key in svc.ulimits:
            if key not in ULIMIT_NAMES:
                self.add(
                    (*base, "ulimits", key),
                    f"unknown ulimit {key!r}: use one of {', '.join(sorted(ULIMIT_NAMES))}",
                )
        for key, value in svc.sysctls.items():
            if value == "":
                self.add(
                    self._entry(base, "sysctls", key),
                    f"sysctl {key} needs a value ({key}=VALUE, or {key}: VALUE)",
                )

    def _check_network_mode(
        self,
        name: str,
        svc: schema.Service,
        services: Mapping[str, schema.Service | None],
        all_names: list[str],
        active: set[str],
    ) -> None:
        """What Docker refuses (or silently drops) with a network mode, refused here first."""
        mode = svc.network_mode
        if mode is None:
            return
        base: KeyPath = ("services", name)
        shared = mode.removeprefix("service:") if mode.startswith("service:") else None
        why = f"with network_mode: {mode}"
        conflicts: list[tuple[str, bool, str]] = [
            ("networks", svc.networks is not None, "the container joins no network of its own"),
            (
                "ports",
                bool(svc.ports),
                "its ports are those of the host"
                if mode == "host"
                else "it has no network to publish from"
                if mode == "none"
                else f"publish them on service {shared!r}, whose network it shares",
            ),
        ]
        if shared is not None:
            conflicts += [
                ("hostname", svc.hostname is not None, f"it has the hostname of {shared!r}"),
                ("expose", bool(svc.expose), f"expose them on service {shared!r}"),
                ("extra_hosts", bool(svc.extra_hosts), f"set them on service {shared!r}"),
            ]
        for key, present, reason in conflicts:
            if present:
                self.add((*base, key), f"cannot be combined {why}: {reason}")
        if mode == "host":
            for key in svc.sysctls:
                if key.startswith("net."):
                    # runc refuses it at start: the host's own network settings.
                    self.add(
                        self._entry(base, "sysctls", key),
                        f"sysctl {key} cannot be set {why}: it would change the host's own "
                        "network settings (set it on the host, or drop network_mode)",
                    )
        if shared is None:
            return
        where: KeyPath = (*base, "network_mode")
        if shared == name:
            self.add(where, "a service cannot share its own network: name another service")
        elif shared not in all_names:
            close = difflib.get_close_matches(shared, all_names, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.add(where, f"unknown service {shared!r}{hint}")
        elif name in active and shared not in active:
            target = services.get(shared)
            profiles = ", ".join(target.profiles) if target is not None else ""
            self.add(
                where,
                f"service {shared!r} is not deployed (its profiles, {profiles}, are not "
                "active): add one to COMPOSE_PROFILES on the VM, or change network_mode",
            )

    def _check_container_names(
        self, project: str | None, services: Mapping[str, schema.Service | None]
    ) -> None:
        """``container_name`` only where it cannot collide with a name of the project."""
        if project is None:
            return
        defaults = {labels_module.container_name(project, name): name for name in services}
        taken: dict[str, str] = {}
        for name, svc in services.items():
            if svc is None or svc.container_name is None:
                continue
            wanted = svc.container_name
            where: KeyPath = ("services", name, "container_name")
            other = defaults.get(wanted)
            reserved = _reserved_name(project, wanted)
            if other is not None and other != name:
                self.add(
                    where,
                    f"{wanted!r} is the container name of service {other!r}: choose another name",
                )
            elif reserved is not None:
                self.add(where, f"{wanted!r} {reserved}: choose another name")
            elif wanted in taken:
                self.add(
                    where,
                    f"{wanted!r} is also the container_name of service {taken[wanted]!r}: "
                    "container names are unique on the engine",
                )
            else:
                taken[wanted] = name

    def _check_cycles(self, services: Mapping[str, schema.Service | None]) -> None:
        graph = {
            name: [d for d in svc.depends_on if d in services]
            + [
                shared
                for shared in [(svc.network_mode or "").removeprefix("service:")]
                if (svc.network_mode or "").startswith("service:")
                and shared in services
                and shared != name  # reported as such by _check_network_mode
            ]
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
                    svc = services.get(first)
                    by_mode = svc is not None and cycle[1] not in svc.depends_on
                    self.add(
                        ("services", first, "network_mode")
                        if by_mode
                        else self._entry(("services", first), "depends_on", cycle[1]),
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
        targets: dict[str, int] = {}
        for index, volume in enumerate(svc.volumes):
            where: KeyPath = ("services", name, "volumes", index)
            first = targets.setdefault(os.path.normpath(volume.target), index)
            if first != index:
                # Docker refuses the container ("Duplicate mount point"): say so now.
                self.add(
                    where,
                    f"target {volume.target!r} is mounted already by volumes[{first}]: "
                    "one volume per path in the container",
                )
            if volume.source is None:
                continue  # anonymous: nothing to declare or find
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
        kind: Literal["file", "dir", "any"],
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
                    and (ip == port.host_ip or bool(_ANY_ADDRESS & {ip, port.host_ip}))
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


def grant_target(section: GrantSection, grant: ServiceFileGrant) -> str:
    """Where Compose puts a secret or config in the container.

    Secrets: ``/run/secrets/<target or source>``, an absolute target as is;
    configs: ``/<target or source>``, an absolute target as is.
    """
    target = grant.target or grant.source
    if target.startswith("/"):
        return os.path.normpath(target)
    return f"/run/secrets/{target}" if section == "secrets" else f"/{target}"
