"""The checkout's content hashes: what a service's bind mounts and build read.

Part of the *resolve* step of a load (``model/loading.py`` drives it), as a
base of its loader: the hash of a bind-mounted file or folder, with the mount
points Docker makes in the checkout left out; the repository files each
service reads, with their hashes, for the plan's reasons (which file changed);
and a service's build (its context, its arguments, and the context hash that
decides whether the image is rebuilt).

A base class rather than plain functions, because the hashing needs the load's
state: the checkout's root and compose folder, the mount points found once for
the whole load (``mount_points``, used by every service's hashes), and for a
build's arguments the environment and the issues added at their lines
(``ContentReading._from_environ``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from reconciler.model import compose_schema as schema
from reconciler.model.content_reading import ContentReading
from reconciler.model.desired import BuildSpec, Mount
from reconciler.model.files import hash_path
from reconciler.model.yaml_lines import KeyPath


class CheckoutHashing(ContentReading):
    """Hashes the checkout's files a service reads: bind mounts, env files, builds."""

    # Mount points Docker makes in the checkout (``_mount_points``): never hashed.
    mount_points: frozenset[Path] = frozenset()

    def _mount_points(
        self, services: Mapping[str, schema.Service | None], active: set[str]
    ) -> frozenset[Path]:
        """Where Docker makes mount points in the checkout, resolved.

        A volume mounted inside a bind-mounted folder of the repository (``./app:/app``
        with ``/app/node_modules``) needs a folder there: Docker makes
        ``app/node_modules`` in the checkout when the container starts. Hashing it
        would make the next pass see a changed folder and recreate the service on
        every pass; no container sees it (the volume covers it), so it is left out.
        """
        points: set[Path] = set()
        for name, svc in services.items():
            if svc is None or name not in active:
                continue
            for bind in svc.volumes:
                if bind.type != "bind" or not bind.source or os.path.isabs(bind.source):
                    continue
                source = Path(os.path.normpath(self.compose_dir / bind.source))
                if not self._inside(source):
                    continue
                outer = PurePosixPath(os.path.normpath(bind.target))
                for other in svc.volumes:
                    inner = PurePosixPath(os.path.normpath(other.target))
                    if inner != outer and inner.is_relative_to(outer):
                        points.add(source.resolve() / inner.relative_to(outer))
        return frozenset(points)

    def _hash(self, path: Path) -> str:
        """``hash_path`` of a file or folder of the checkout, without Docker's mount points."""
        root = path.resolve()
        skip = [
            point.relative_to(root).as_posix()
            for point in self.mount_points
            if point != root and point.is_relative_to(root)
        ]
        return hash_path(path, skip=skip)

    def _sources(self, svc: schema.Service, mounts: tuple[Mount, ...]) -> dict[str, str]:
        """The repository files the service reads, by path from the root, with their hashes.

        Only for the plan's reasons (which file changed): an env file's bytes (an
        encrypted one's ciphertext, which git holds anyway) and bind-mounted
        files and folders; ``_build_spec`` adds the build's.
        """
        found: dict[str, str] = {}
        for env_file in svc.env_file:
            path = Path(os.path.normpath(self.compose_dir / env_file.path))
            if path.is_file() and self._inside(path):
                found[os.path.relpath(path, self.root)] = hash_path(path)
        for mount in mounts:
            if mount.content_hash is not None:
                found[os.path.relpath(mount.source, self.root)] = mount.content_hash
        return found

    def _build_spec(
        self, base: KeyPath, build: schema.Build
    ) -> tuple[BuildSpec | None, dict[str, str]]:
        """The build, and its files for the plan's reasons: the context folder and a
        Dockerfile kept outside it, by path from the root, with their hashes."""
        context = Path(os.path.normpath(self.compose_dir / build.context))
        if not context.is_dir() or not self._inside(context):
            return None, {}  # reported by the checks
        args: dict[str, str] = {}
        for key, value in build.args.items():
            resolved = self._from_environ(self._entry((*base, "build"), "args", key), key, value)
            if resolved is not None:
                args[key] = resolved
        sources = _build_sources(context, build.dockerfile, hash_of=self._hash, inside=self._inside)
        spec = BuildSpec(
            context=str(context),
            dockerfile=build.dockerfile,
            args=args,
            target=build.target,
            context_hash=_build_hash(*sources.values()),
        )
        return spec, {os.path.relpath(path, self.root): digest for path, digest in sources.items()}


def _build_sources(
    context: Path,
    dockerfile: str,
    *,
    hash_of: Callable[[Path], str] = hash_path,
    inside: Callable[[Path], bool] = lambda _: True,
) -> dict[Path, str]:
    """What decides whether an image is rebuilt: its context's files, and the
    Dockerfile too when it lies outside the context (``context: ../site`` with
    ``dockerfile: ../images/webserver/Dockerfile``: the site's files are the
    context, the image's recipe is kept apart from them), each with its hash."""
    found = {context: hash_of(context)}
    path = Path(os.path.normpath(context / dockerfile))
    # A missing Dockerfile, or one outside the repository (never read), is
    # reported by the checks.
    if not path.is_relative_to(context) and path.is_file() and inside(path):
        found[path] = hash_of(path)
    return found


def _build_hash(inside: str, outside: str | None = None) -> str:
    """The context hash of a build from ``_build_sources``. A Dockerfile inside the
    context is already covered, so such a context's hash is what it always was."""
    if outside is None:
        return inside
    digest = hashlib.sha256()
    digest.update(inside.encode())
    digest.update(b"\0dockerfile\0")
    digest.update(outside.encode())
    return digest.hexdigest()
