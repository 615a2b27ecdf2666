"""The Docker engine behind ``reconciler.ports.Engine``: the only module that talks to dockerd.

A pass calls ``observe`` once (one list call per kind: containers, networks,
volumes), then ``apply`` drives the change methods here. Library exceptions
never leave this module: ``NotFound`` means absent, an engine that cannot be
reached is ``Unavailable``, a change the engine refuses is ``EngineError``
naming the service or container and the engine's own message, and an image
that can be neither found, pulled nor built is ``ImageUnavailable``.
"""

from __future__ import annotations

import io
import math
import os
import re
import tarfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import docker
import docker.errors
import docker.types
import docker.utils
import requests

from reconciler import labels as lbl
from reconciler.decide.image_gc import ObservedImage, PulledImage
from reconciler.errors import EngineError, ImageUnavailable, Unavailable
from reconciler.model.desired import (
    BuildSpec,
    FileGrant,
    HealthCheck,
    Mount,
    NetworkSpec,
    PortBinding,
    ServiceSpec,
    VolumeSpec,
)
from reconciler.model.engine_mode import SwarmRole, swarm_role_of
from reconciler.model.observed import (
    Observed,
    ObservedContainer,
    ObservedNetwork,
    ObservedVolume,
)
from reconciler.ports import ALREADY_GONE, Progress

# On images we build: the hash of the build context they were built from, so
# an unchanged context is never rebuilt and a changed one always is.
CONTEXT_HASH_LABEL = f"{lbl.PREFIX}.context-hash"

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
POLL_INTERVAL_S = 0.25
# Without a health check, "ready" means still running this long after it was
# first seen running: a process that dies at once is caught before we move on.
STABLE_RUNNING_S = 1.0
LOG_TAIL_LINES = 5

_NS = 1_000_000_000
_EXIT_CODE = re.compile(r"^(?:Exited|Restarting) \((-?\d+)\)")
_HEALTH = (
    ("(health: starting)", "starting"),
    ("(unhealthy)", "unhealthy"),
    ("(healthy)", "healthy"),
)


def parse_status(status: str) -> tuple[str | None, int | None]:
    """Health and exit code from the list call's ``Status`` text.

    ``"Up 3 minutes (healthy)"`` -> ("healthy", None);
    ``"Exited (1) 2 minutes ago"`` -> (None, 1).
    """
    health = next((value for marker, value in _HEALTH if marker in status), None)
    match = _EXIT_CODE.match(status)
    return health, int(match.group(1)) if match else None


class DockerEngine:
    """``Engine`` on a Docker engine reached through docker-py.

    The client is made on first use, so a reconciler started before dockerd
    gets ``Unavailable`` from its first pass (and retries) instead of dying.
    """

    def __init__(
        self, client: docker.DockerClient | None = None, *, base_url: str | None = None
    ) -> None:
        self._client_value = client
        self._base_url = base_url
        self.where = base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET

    def close(self) -> None:
        """Release the engine connection (a later call opens a new one)."""
        if self._client_value is not None:
            self._client_value.close()
            self._client_value = None

    # -- plumbing --------------------------------------------------------

    @property
    def _api(self) -> Any:
        if self._client_value is None:
            socket = self.where.removeprefix("unix://")
            if self.where.startswith("unix://") and not os.path.exists(socket):
                # Saves a connection attempt, whose socket docker-py would leak.
                raise Unavailable(
                    f"Docker engine unavailable at {self.where}: no such socket "
                    "(is dockerd running?)"
                )
            try:
                if self._base_url is not None:
                    self._client_value = docker.DockerClient(
                        base_url=self._base_url, version="auto"
                    )
                else:
                    self._client_value = docker.from_env()
            except docker.errors.DockerException as exc:
                raise self._unavailable(exc) from exc
        return self._client_value.api

    def _unavailable(self, exc: BaseException) -> Unavailable:
        return Unavailable(f"Docker engine unavailable at {self.where}: {exc}")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Around calls that only read: any failure means we cannot see the engine."""
        try:
            yield
        except docker.errors.NotFound:
            raise
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def _changing(self, what: str) -> Iterator[None]:
        """Around changes: a refusal names ``what``; a lost engine is ``Unavailable``."""
        try:
            yield
        except docker.errors.APIError as exc:  # NotFound included: absent is a refusal here
            raise EngineError(f"{what}: {_explain(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._unavailable(exc) from exc

    # -- observe ---------------------------------------------------------

    def swarm_role(self) -> SwarmRole:
        """What this engine is in a Swarm (``docker info``): manager, worker or none;
        ``Unavailable`` when it cannot be asked."""
        api = self._api
        try:
            info = api.info()
        except docker.errors.APIError as exc:
            if exc.status_code == 403:
                # A socket proxy without INFO (docs/security.md): it allows no
                # Swarm calls either, so this is one engine.
                return "none"
            raise self._unavailable(exc) from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._unavailable(exc) from exc
        return swarm_role_of(info if isinstance(info, dict) else {})

    def observe(self, project: str) -> Observed:
        api = self._api
        with self._reading():
            raw_containers = api.containers(all=True)
            raw_networks = api.networks()
            raw_volumes = api.volumes()
        return Observed(
            containers=tuple(_container(c) for c in raw_containers),
            networks=tuple(
                ObservedNetwork(id=n["Id"], name=n["Name"], labels=dict(n.get("Labels") or {}))
                for n in raw_networks
            ),
            volumes=tuple(
                ObservedVolume(name=v["Name"], labels=dict(v.get("Labels") or {}))
                for v in (raw_volumes or {}).get("Volumes") or []
            ),
        )

    # -- images ----------------------------------------------------------

    def ensure_image(
        self,
        service: ServiceSpec,
        *,
        progress: Progress | None = None,
        project: str | None = None,
    ) -> PulledImage | None:
        say = progress or (lambda _line: None)
        if service.build is not None:
            self._ensure_built(service, service.build, say, project=project)
            return None
        before = self._inspect_image(service.image)
        present = before is not None
        if service.pull_policy == "never":
            if present:
                return None
            raise ImageUnavailable(
                f"service {service.name}: image {service.image} is not present locally and "
                f"pull_policy is never; {_how_to_fix(service.image)}"
            )
        if present and service.pull_policy != "always":
            return None
        self._pull(service, present=present, say=say)
        # One inspect, only after a pull: what it brought, for image GC's records.
        after = self._inspect_image(service.image)
        if after is None or (before is not None and before.get("Id") == after.get("Id")):
            return None
        return PulledImage(
            image_id=str(after.get("Id")),
            reference=service.image,
            tags=tuple(str(t) for t in after.get("RepoTags") or ()),
        )

    def _inspect_image(self, image: str) -> dict[str, Any] | None:
        """The engine's view of the image, or None when it is absent."""
        api = self._api
        try:
            with self._reading():
                return dict(api.inspect_image(image))
        except docker.errors.NotFound:
            return None

    def _image_labels(self, image: str) -> dict[str, str] | None:
        """The image's labels, or None when the image is absent."""
        attrs = self._inspect_image(image)
        if attrs is None:
            return None
        return dict((attrs.get("Config") or {}).get("Labels") or {})

    def _pull(self, service: ServiceSpec, *, present: bool, say: Progress) -> None:
        api = self._api
        repository, tag = docker.utils.parse_repository_tag(service.image)
        say(f"pulling {service.image}")
        error: str | None = None
        try:
            # Read the stream to its end even after an error: leaving it
            # half-read would leak the connection.
            for chunk in api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in chunk:
                    error = error or str(chunk["error"])
                # Progress bars would flood the log; the status lines say enough.
                elif "progress" not in chunk and chunk.get("status"):
                    layer = f"{chunk['id']}: " if chunk.get("id") else ""
                    say(f"{layer}{chunk['status']}")
            if error is not None:
                raise docker.errors.APIError(error, explanation=error)
        except docker.errors.APIError as exc:
            if present:
                raise ImageUnavailable(
                    f"service {service.name}: image {service.image} cannot be pulled "
                    f"({_explain(exc)}) and pull_policy is always; a local copy exists: "
                    "set pull_policy: missing to use it, or make the registry reachable"
                ) from exc
            raise ImageUnavailable(
                f"service {service.name}: image {service.image} is not present locally and "
                f"cannot be pulled ({_explain(exc)}); {_how_to_fix(service.image)}"
            ) from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._unavailable(exc) from exc

    def _ensure_built(
        self, service: ServiceSpec, build: BuildSpec, say: Progress, *, project: str | None
    ) -> None:
        labels = self._image_labels(service.image)
        if labels is not None and labels.get(CONTEXT_HASH_LABEL) == build.context_hash:
            say(f"image {service.image} is up to date (context {build.context_hash[:12]})")
            return
        api = self._api
        failed = (
            f"service {service.name}: building image {service.image} from {build.context} failed"
        )
        say(f"building {service.image} from {build.context}")
        error: str | None = None
        try:
            stream = api.build(
                path=build.context,
                dockerfile=build.dockerfile,
                buildargs=dict(build.args) or None,
                target=build.target,
                tag=service.image,
                labels={
                    CONTEXT_HASH_LABEL: build.context_hash,
                    # What image garbage collection may remove (decide/image_gc.py).
                    **(
                        {lbl.IMAGE_PROJECT: project, lbl.IMAGE_SERVICE: service.name}
                        if project
                        else {}
                    ),
                },
                rm=True,
                forcerm=True,
                # Base images present are used as they are (a registry may be out of reach).
                pull=False,
                decode=True,
            )
            for chunk in stream:  # to its end, even after an error (see _pull)
                if "error" in chunk:
                    error = error or str(chunk["error"]).strip()
                for line in str(chunk.get("stream") or "").splitlines():
                    if line.strip():
                        say(line.rstrip())
        except docker.errors.APIError as exc:
            raise ImageUnavailable(f"{failed}: {_explain(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._unavailable(exc) from exc
        except OSError as exc:  # the context folder could not be read into a tarball
            raise ImageUnavailable(f"{failed}: cannot read the build context: {exc}") from exc
        if error is not None:
            raise ImageUnavailable(
                f"{failed}: {error}; fix the Dockerfile, or if its base image cannot be "
                "pulled, build one locally (images/local/build-base-images.sh) and pass it "
                "as a build arg"
            )

    def list_images(
        self, project: str, *, pulled: Collection[str] = ()
    ) -> tuple[ObservedImage, ...]:
        """The images the reconciler built for ``project`` (only those carry its
        label) and those of the ``pulled`` ids still present.

        Still one list call: filtered by label when nothing was pulled, else
        every image, picked here (a filter cannot say "this label or these ids").
        """
        api = self._api
        label = f"{lbl.IMAGE_PROJECT}={project}"
        wanted = set(pulled)
        with self._reading():
            raw = api.images(filters=None if wanted else {"label": label})
        images = (
            ObservedImage(
                id=str(i["Id"]),
                tags=tuple(t for t in i.get("RepoTags") or () if t != "<none>:<none>"),
                labels=dict(i.get("Labels") or {}),
                created=int(i.get("Created") or 0),
                size=int(i.get("Size") or 0),
            )
            for i in raw or ()
        )
        return tuple(i for i in images if i.project == project or i.id in wanted)

    def remove_image(self, image_id: str, *, by_tags: Collection[str] = ()) -> str | None:
        """Remove an image, never forced; None when removed, else why it stays.

        An image a container uses or another image is built on is refused by
        the engine (409): that is a reason to keep it, not an error. With
        ``by_tags`` (a pulled image) each tag is removed only while it still
        names ``image_id``: one pulled again since names another image, which
        is not ours to remove. Without tags left to remove, the id goes.
        """
        api = self._api
        targets = [t for t in by_tags if self._names(t, image_id)] or [image_id]
        for target in targets:
            try:
                api.remove_image(target, force=False, noprune=False)
            except docker.errors.NotFound:
                if target == image_id:
                    return ALREADY_GONE
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    return _explain(exc)
                raise EngineError(f"removing image {target[:40]}: {_explain(exc)}") from exc
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise self._unavailable(exc) from exc
        return None

    def _names(self, tag: str, image_id: str) -> bool:
        attrs = self._inspect_image(tag)
        return attrs is not None and attrs.get("Id") == image_id

    # -- networks and volumes -------------------------------------------

    def create_network(self, network: NetworkSpec, *, project: str) -> None:
        api = self._api
        with self._changing(f"creating network {network.name}"):
            api.create_network(
                network.name,
                driver=network.driver,
                internal=network.internal,
                labels={**network.labels, lbl.PROJECT: project, lbl.NETWORK: network.key},
                check_duplicate=True,
            )

    def create_volume(self, volume: VolumeSpec, *, project: str) -> None:
        api = self._api
        with self._changing(f"creating volume {volume.name}"):
            api.create_volume(
                volume.name,
                driver=volume.driver,
                driver_opts=dict(volume.driver_opts) or None,
                labels={**volume.labels, lbl.PROJECT: project, lbl.VOLUME: volume.key},
            )

    def remove_network(self, network_id: str) -> None:
        api = self._api
        try:
            with self._changing(f"removing network {network_id[:12]}"):
                api.remove_network(network_id)
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return  # already gone: what we wanted
            raise

    # -- containers ------------------------------------------------------

    def run_container(
        self,
        service: ServiceSpec,
        *,
        name: str,
        labels: dict[str, str],
        inherit_from: str | None = None,
    ) -> str:
        api = self._api
        where = f"service {service.name}: container {name}"
        first, *others = service.networks or (None,)
        anonymous = self._anonymous_mounts(service, inherit_from, where=where)
        with self._changing(f"{where}: create failed"):
            host_config = api.create_host_config(**host_config_args(service, anonymous=anonymous))
            networking_config = None
            if first is not None:
                endpoint = api.create_endpoint_config(aliases=[service.name, *first.aliases])
                networking_config = api.create_networking_config({first.name: endpoint})
            created = api.create_container(
                image=service.image,
                name=name,
                command=list(service.command) if service.command is not None else None,
                entrypoint=list(service.entrypoint) if service.entrypoint is not None else None,
                environment=dict(service.environment) or None,
                user=service.user,
                working_dir=service.working_dir,
                hostname=service.hostname,
                labels=dict(labels),
                healthcheck=_healthcheck(service.healthcheck),
                ports=_exposed_ports(service) or None,
                stop_timeout=math.ceil(service.stop_grace_period_s),
                stop_signal=service.stop_signal,
                stdin_open=service.stdin_open,
                tty=service.tty,
                host_config=host_config,
                networking_config=networking_config,
            )
        container_id = str(created["Id"])
        try:
            grants = (*service.secrets, *service.configs)
            if grants:
                with self._changing(f"{where}: putting its secrets and configs in failed"):
                    api.put_archive(container_id, "/", grant_archive(grants))
            for network in others:
                if network is None:
                    continue
                with self._changing(f"{where}: connecting to network {network.name} failed"):
                    api.connect_container_to_network(
                        container_id, network.name, aliases=[service.name, *network.aliases]
                    )
            with self._changing(f"{where}: start failed"):
                api.start(container_id)
        except BaseException:
            # A half-made container would block the name on the next attempt.
            self._remove_quietly(container_id)
            raise
        return container_id

    def _anonymous_mounts(
        self, service: ServiceSpec, inherit_from: str | None, *, where: str
    ) -> list[Any]:
        """The service's anonymous volumes, and those of its image's ``VOLUME``s,
        taken over from the container ``inherit_from`` replaces, as Compose does."""
        if inherit_from is None:
            return anonymous_mounts(service, old_mounts=(), image_volumes=())
        api = self._api
        with self._changing(f"{where}: reading the volumes of {inherit_from[:12]} failed"):
            old_mounts = api.inspect_container(inherit_from).get("Mounts") or ()
        image = self._inspect_image(service.image) or {}
        image_volumes = (image.get("Config") or {}).get("Volumes") or {}
        return anonymous_mounts(service, old_mounts=old_mounts, image_volumes=image_volumes)

    def _remove_quietly(self, container_id: str) -> None:
        # The original error matters more; the next pass prunes what is left.
        with suppress(docker.errors.DockerException, requests.exceptions.RequestException):
            self._api.remove_container(container_id, force=True, v=False)

    def start_container(self, container_id: str) -> None:
        api = self._api
        with self._changing(f"starting container {container_id[:12]}"):
            api.start(container_id)

    def stop_container(self, container_id: str, *, timeout_s: float = 10.0) -> None:
        api = self._api
        with self._changing(f"stopping container {container_id[:12]}"):
            api.stop(container_id, timeout=math.ceil(timeout_s))

    def rename_container(self, container_id: str, new_name: str) -> None:
        api = self._api
        with self._changing(f"renaming container {container_id[:12]} to {new_name}"):
            api.rename(container_id, new_name)

    def remove_container(self, container_id: str) -> None:
        api = self._api
        try:
            with self._changing(f"removing container {container_id[:12]}"):
                # v=False: anonymous volumes stay; a deploy never deletes data.
                api.remove_container(container_id, force=True, v=False)
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return
            raise

    # -- readiness -------------------------------------------------------

    def wait_ready(
        self, container_id: str, healthcheck: HealthCheck | None, *, timeout_s: float
    ) -> str | None:
        api = self._api
        checked = healthcheck is not None and not healthcheck.disabled
        deadline = time.monotonic() + timeout_s
        # (StartedAt, when we first saw it running): a restart changes StartedAt.
        running_since: tuple[str, float] | None = None
        while True:
            with self._changing(f"inspecting container {container_id[:12]}"):
                state: dict[str, Any] = api.inspect_container(container_id).get("State") or {}
            now = time.monotonic()
            status = state.get("Status")
            if status in ("exited", "dead"):
                return f"exited with code {state.get('ExitCode')}{self._log_tail(container_id)}"
            if status == "restarting":
                return (
                    f"keeps restarting (last exit code {state.get('ExitCode')})"
                    f"{self._log_tail(container_id)}"
                )
            if checked:
                health = state.get("Health") or {}
                if health.get("Status") == "healthy":
                    return None
                if health.get("Status") == "unhealthy":
                    return f"unhealthy{_last_probe(health)}"
            elif status == "running":
                started = str(state.get("StartedAt"))
                if running_since is None or running_since[0] != started:
                    running_since = (started, now)
                elif now - running_since[1] >= STABLE_RUNNING_S:
                    return None
            if now >= deadline:
                what = "healthy" if checked else "running"
                return f"not {what} after {timeout_s:.0f}s (state {status})"
            time.sleep(min(POLL_INTERVAL_S, max(deadline - now, 0.01)))

    def _log_tail(self, container_id: str) -> str:
        """The last log lines, which usually say why a container stopped."""
        try:
            raw = self._api.logs(container_id, stdout=True, stderr=True, tail=LOG_TAIL_LINES)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return ""
        lines = [ln.strip() for ln in bytes(raw).decode(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        return f"; last log lines: {' | '.join(lines)}" if lines else ""


# -- conversions (pure) -------------------------------------------------


def _explain(exc: docker.errors.APIError) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc).strip()


# The stand-ins images/local/build-base-images.sh builds (its --only names),
# by the repository name of the official image they stand in for.
LOCAL_STAND_INS = {
    "busybox": ("busybox", "reconciler-local/busybox:latest"),
    "debian": ("debian", "reconciler-local/debian:bookworm"),
    "mariadb": ("mariadb", "reconciler-local/mariadb:local"),
    "python": ("python", "reconciler-local/python:local"),
    "openlitespeed": ("openlitespeed", "reconciler-local/openlitespeed:local"),
    "restic": ("restic", "reconciler-local/restic:local"),
    "phpmyadmin": ("phpmyadmin", "reconciler-local/phpmyadmin:local"),
}
# The env file variable that the default stack (desired-state/compose.yaml)
# reads for an image, where it is not NAME_IMAGE: the webserver is built, and
# its base comes in as a build argument.
STACK_VARIABLES = {"openlitespeed": "WEBSERVER_BASE_IMAGE"}


def _how_to_fix(image: str) -> str:
    base = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    variable = STACK_VARIABLES.get(base) or re.sub(r"[^A-Z0-9]", "_", base.upper()) + "_IMAGE"
    stand_in = LOCAL_STAND_INS.get(base)
    if stand_in is None:
        # No stand-in of ours: naming one would send the user to a build that makes nothing.
        return (
            "make it present on this machine (docker load -i a saved copy, or docker build "
            "one) and point compose.yaml at it, "
            f"e.g. image: ${{{variable}:-{image}}} in compose.yaml and {variable}=<that image> "
            "in the env file"
        )
    only, tag = stand_in
    if base in STACK_VARIABLES:
        return (
            f"build its local stand-in (images/local/build-base-images.sh --only {only}) and "
            f"set {variable}={tag} in the env file (the default stack builds on it)"
        )
    return (
        f"build its local stand-in (images/local/build-base-images.sh --only {only}) and "
        f"point compose.yaml at it, e.g. image: ${{{variable}:-{image}}} in compose.yaml and "
        f"{variable}={tag} in the env file"
    )


def _container(raw: Mapping[str, Any]) -> ObservedContainer:
    health, exit_code = parse_status(str(raw.get("Status") or ""))
    names = raw.get("Names") or []
    return ObservedContainer(
        id=str(raw["Id"]),
        name=str(names[0]).lstrip("/") if names else str(raw["Id"])[:12],
        labels=dict(raw.get("Labels") or {}),
        state=str(raw.get("State") or ""),
        health=health,
        exit_code=exit_code,
        image=str(raw.get("Image") or ""),
        image_id=str(raw.get("ImageID") or ""),
    )


def _port_bindings(ports: tuple[PortBinding, ...]) -> dict[str, list[tuple[str, int | None]]]:
    bindings: dict[str, list[tuple[str, int | None]]] = {}
    for port in ports:
        bindings.setdefault(f"{port.target}/{port.protocol}", []).append(
            (port.host_ip, port.published)
        )
    return bindings


def _exposed(port: PortBinding) -> int | tuple[int, str]:
    return port.target if port.protocol == "tcp" else (port.target, port.protocol)


def grant_archive(grants: tuple[FileGrant, ...]) -> bytes:
    """A tar of the secrets and configs, for ``put_archive`` into the created container.

    Why not a read-only bind mount, as Compose does for file secrets: the
    content comes from a commit folder that changes each commit, and the
    content of an encrypted file must not lie in clear on the host disk where
    others could read it. Copied into the container before it starts (as
    Compose does for ``environment:`` secrets and ``content:`` configs), it
    lives only in the container's own layer, it works on any engine (a remote
    one too), the tar headers give each file its uid, gid and mode, and it
    stays across restarts of that container; a new container gets it anew.
    Parent folders (``/run/secrets``) are made by the engine, owned by root.
    """
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for grant in grants:
            info = tarfile.TarInfo(grant.target.lstrip("/"))
            info.size = len(grant.content)
            info.mode = grant.mode
            info.uid = grant.uid
            info.gid = grant.gid
            info.mtime = now
            tar.addfile(info, io.BytesIO(grant.content))
    return buffer.getvalue()


def _exposed_ports(service: ServiceSpec) -> list[int | tuple[int, str]]:
    """The container's ports: those published, then ``expose`` (Docker's ExposedPorts)."""
    found: dict[int | tuple[int, str], None] = dict.fromkeys(_exposed(p) for p in service.ports)
    for entry in service.expose:
        port, _, protocol = entry.partition("/")
        found.setdefault(int(port) if protocol == "tcp" else (int(port), protocol))
    return list(found)


def host_config_args(service: ServiceSpec, *, anonymous: Sequence[Any] = ()) -> dict[str, Any]:
    """``create_host_config``'s arguments for ``service``: each key only when it is set,
    so what Compose leaves at Docker's default stays the engine's default. ``anonymous``:
    the mounts of its anonymous volumes (``_anonymous_mounts``)."""
    args: dict[str, Any] = {
        "port_bindings": _port_bindings(service.ports) or None,
        "mounts": [*(_mount(m) for m in service.mounts), *anonymous] or None,
        "restart_policy": _restart_policy(service.restart),
    }
    optional: dict[str, Any] = {
        "cap_add": list(service.cap_add) or None,
        "cap_drop": list(service.cap_drop) or None,
        "init": service.init,
        "tmpfs": list(service.tmpfs) or None,
        "shm_size": service.shm_size,
        "extra_hosts": list(service.extra_hosts) or None,
        "read_only": service.read_only or None,
        "security_opt": list(service.security_opt) or None,
        "ulimits": [
            docker.types.Ulimit(name=u.name, soft=u.soft, hard=u.hard) for u in service.ulimits
        ]
        or None,
        "sysctls": dict(service.sysctls) or None,
        "log_config": (
            None
            if service.logging is None
            else docker.types.LogConfig(
                type=service.logging.driver, config=dict(service.logging.options)
            )
        ),
        "mem_limit": service.mem_limit,
        "mem_reservation": service.mem_reservation,
        # Docker's NanoCpus: CPUs in billionths, as ``docker run --cpus``.
        "nano_cpus": None if service.cpus is None else round(service.cpus * _NS),
        "pids_limit": service.pids_limit,
        "network_mode": service.network_mode,
    }
    args.update({key: value for key, value in optional.items() if value is not None})
    return args


def _mount(mount: Mount) -> Any:
    return docker.types.Mount(
        target=mount.target, source=mount.source, type=mount.type, read_only=mount.read_only
    )


# Docker names an anonymous volume with 64 hex digits (a named one is ours or
# the user's, and is mounted by its name when the desired state says so).
_ANONYMOUS_NAME = re.compile(r"[0-9a-f]{64}")


def anonymous_mounts(
    service: ServiceSpec,
    *,
    old_mounts: Collection[Mapping[str, Any]],
    image_volumes: Collection[str],
) -> list[Any]:
    """Mounts for the anonymous volumes of a new container of ``service``.

    ``old_mounts`` are the ``Mounts`` of the container it replaces (its
    inspect), ``image_volumes`` the image's ``VOLUME`` paths. As Docker Compose
    does, each anonymous target of the service mounts the volume the old
    container has at that path (a fresh one when it has none), and so does
    each ``VOLUME`` of the image that the service mounts nothing at; so a
    recreate keeps their data. Only anonymous volumes are taken over: never a
    bind, nor a named volume the desired state no longer mounts there.
    """
    previous = {
        os.path.normpath(str(m.get("Destination"))): str(m["Name"])
        for m in old_mounts
        if m.get("Type") == "volume" and _ANONYMOUS_NAME.fullmatch(str(m.get("Name") or ""))
    }
    taken = {os.path.normpath(m.target) for m in service.mounts}
    mounts: list[Any] = []
    for volume in service.anonymous_volumes:
        target = os.path.normpath(volume.target)
        taken.add(target)
        mounts.append(
            docker.types.Mount(
                target=volume.target,
                source=previous.get(target),  # None: Docker makes a new one
                type="volume",
                read_only=volume.read_only,
            )
        )
    for path in sorted(image_volumes):
        target = os.path.normpath(path)
        if target not in taken and target in previous:
            taken.add(target)
            mounts.append(docker.types.Mount(target=path, source=previous[target], type="volume"))
    return mounts


def _restart_policy(restart: str) -> dict[str, object]:
    name, _, retries = restart.partition(":")
    if name == "on-failure" and retries:
        return {"Name": name, "MaximumRetryCount": int(retries)}
    return {"Name": name or "no"}


def _healthcheck(check: HealthCheck | None) -> dict[str, object] | None:
    if check is None:
        return None
    if check.disabled:
        return {"test": ["NONE"]}
    return {
        "test": list(check.test),
        "interval": int(check.interval_s * _NS),
        "timeout": int(check.timeout_s * _NS),
        "retries": check.retries,
        "start_period": int(check.start_period_s * _NS),
    }


def _last_probe(health: Mapping[str, Any]) -> str:
    log = health.get("Log") or []
    if not log:
        return ""
    output = " ".join(str(log[-1].get("Output") or "").split())
    code = log[-1].get("ExitCode")
    return (
        f" (last check exited {code}: {output[-200:]})"
        if output
        else f" (last check exited {code})"
    )


__all__ = [
    "CONTEXT_HASH_LABEL",
    "DockerEngine",
    "EngineError",
    "anonymous_mounts",
    "parse_status",
]
