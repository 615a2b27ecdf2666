"""The config hash: one stable digest of a service's desired configuration.

It goes on the container as a label; a different hash means recreate (Compose
and doco-cd do the same). It covers everything that shapes the container,
including the contents of files from the repository (env_file values are in
``environment``; bind-mounted repo files and build contexts carry their own
content hashes), and nothing that does not (the commit, the reason).

The content of each secret and config a service is granted enters as its
digest (keyed for secrets, below), so a changed file recreates exactly the
services granted it; the plan names it ``secrets.NAME`` / ``configs.NAME``.

A string that holds a secret decrypted from the commit (an environment value,
a build argument, a command word: ``ServiceSpec.secret_values``) enters the
hash as a keyed digest (``redaction.secret_fingerprint``, keyed by the VM's age
key): a plain SHA-256 over a spec whose every other field is known from git
would let anyone who reads the label test guesses of the secret offline. The
value still changes the hash, so a new secret recreates the service. Which
strings are keyed depends on the desired state alone, never on what a process
saw before, so the daemon and the CLI agree. Specs without secrets hash as
before, so no running service is recreated by this rule alone.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from reconciler.model.desired import ServiceSpec
from reconciler.redaction import secret_fingerprint

# Bump when the meaning of the hashed fields changes, so every container is
# recreated once rather than compared against an incompatible digest.
HASH_VERSION = "1"

# The fields of ServiceSpec when HASH_VERSION 1 was set. A field added since
# enters the hash only when it is set (differs from its default): an upgrade
# that learns a new Compose key must not recreate every running service whose
# compose.yaml does not use it. Never add to this set; new fields need nothing.
# So ``deploy`` (Swarm's, None on a plain engine) is hashed only in swarm mode.
HASHED_SINCE_V1 = frozenset(
    [
        "name",
        "image",
        "build",
        "pull_policy",
        "command",
        "entrypoint",
        "environment",
        "ports",
        "mounts",
        "networks",
        "depends_on",
        "healthcheck",
        "restart",
        "labels",
        "user",
        "working_dir",
        "hostname",
        "stop_grace_period_s",
    ]
)


# Digits of each entry of the parts label: enough to tell versions apart, short
# enough for a label that lists every environment variable.
PART_DIGITS = 12
# Split into one part per entry: the plan names the variable, never its value.
_SPLIT_KEYS = ("environment", "labels")
# Parts are named as compose.yaml names them, where the spec's field differs.
# Named and anonymous volumes are both ``volumes:`` in compose.yaml: one part.
_COMPOSE_NAMES = {
    "mounts": "volumes",
    "anonymous_volumes": "volumes",
    "stop_grace_period_s": "stop_grace_period",
}
# One part per secret or config granted, by its top-level name (``secrets.db-password``).
_GRANT_KEYS = ("secrets", "configs")
FILE_PREFIX = "file:"


def config_hash(service: ServiceSpec) -> str:
    """Hex SHA-256 of the service's normalised spec; stable across runs and dict order."""
    canonical = json.dumps(
        [HASH_VERSION, _normalised(service)], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def config_parts(service: ServiceSpec) -> dict[str, str]:
    """Short digests of each part of what ``config_hash`` covers, for the plan's reasons.

    Keyed by top-level compose key (``image``, ``command``, ``ports``, ...), with
    ``environment`` and ``labels`` split per entry (``environment.API_TOKEN``)
    and the repository files the service reads per path
    (``file:desired-state/web.env``). Parts at their default are left out, so
    the label stays small; a part set or unset shows on one side only.
    The same normalised spec and the same keying of secrets as the config hash:
    a part holding a secret is a digest of its keyed digest. When the files
    have parts of their own, their contents are left out of ``mounts``,
    ``build`` and a built image's tag: a changed file is named once, as itself.
    """
    parts: dict[str, str] = {}
    data = _normalised(service)
    if service.sources:
        data = _without_file_contents(data, service)
    for key, value in data.items():
        if key == "name" or (value == _DEFAULTS.get(key) and key not in _SPLIT_KEYS):
            continue
        if key in _SPLIT_KEYS and isinstance(value, dict):
            for entry, entry_value in value.items():
                parts[f"{key}.{entry}"] = _short(key, entry, entry_value)
        elif key in _GRANT_KEYS and isinstance(value, list):
            by_name: dict[str, list[Any]] = {}
            for grant in value:
                by_name.setdefault(grant["name"], []).append(grant)
            for grant_name, grants in by_name.items():
                parts[f"{key}.{grant_name}"] = _short(key, grant_name, grants)
        else:
            name = _COMPOSE_NAMES.get(key, key)
            # A second field of the same compose key joins the first one's part
            # (a part alone when the first is at its default).
            parts[name] = _short(name, parts[name], value) if name in parts else _short(name, value)
    for path, content_hash in service.sources.items():
        parts[f"{FILE_PREFIX}{path}"] = _short(FILE_PREFIX, path, content_hash)
    return parts


def encode_parts(parts: dict[str, str]) -> str:
    """The label's value: compact JSON, sorted, so equal parts give an equal label."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def decode_parts(label: str | None) -> dict[str, str] | None:
    """The parts stored on a container; None when absent (an older reconciler) or unreadable."""
    if not label:
        return None
    try:
        data = json.loads(label)
    except ValueError:
        return None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        return None
    return data


def changed_parts(desired: dict[str, str], observed: dict[str, str]) -> list[str]:
    """Names of the parts that differ, added or removed, in a stable order: keys, then files."""
    names = {n for n in desired.keys() | observed.keys() if desired.get(n) != observed.get(n)}
    return sorted(names, key=lambda n: (n.startswith(FILE_PREFIX), n))


def _without_file_contents(data: dict[str, Any], service: ServiceSpec) -> dict[str, Any]:
    """``data`` with the hashes of repository files taken out (they are parts of their own)."""
    data = {**data, "mounts": [dict(m) for m in data["mounts"]]}
    for mount in data["mounts"]:
        if mount["content_hash"] is not None:
            mount["source"] = "repository"
            mount["content_hash"] = "repository"
    build = service.build
    if build is not None and data["build"] is not None:
        data["build"] = {**data["build"], "context_hash": "repository"}
        # The tag the reconciler gives a built image is named for its context.
        tag = f":{build.context_hash[:12]}"
        if isinstance(data["image"], str) and data["image"].endswith(tag):
            data["image"] = data["image"].removesuffix(tag) + ":<context>"
    return data


_DEFAULTS = ServiceSpec(name="", image="").model_dump(mode="json")


def _short(*value: Any) -> str:
    # Without HASH_VERSION: a bumped version recreates everything, and the
    # parts then all match, so the reason says "configuration changed" rather
    # than naming every key.
    canonical = json.dumps(list(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:PART_DIGITS]


def _normalised(service: ServiceSpec) -> dict[str, Any]:
    """The spec as the config hash sees it: what shapes the container, secrets keyed."""
    data = service.model_dump(mode="json")
    data = {
        key: value
        for key, value in data.items()
        if key in HASHED_SINCE_V1 or value != _DEFAULTS.get(key)
    }
    # depends_on shapes the order of a pass, not the container itself.
    data.pop("depends_on", None)
    # A port's publish mode is Swarm's (None on a plain engine): hashed only
    # when set, like ``deploy`` above, so ports hash as they did before it.
    for port in data["ports"]:
        if port.get("mode") is None:
            port.pop("mode", None)
    # Files from the repository live in a folder per commit: hash what they
    # hold, not where they are, or every commit would recreate the service.
    for mount in data["mounts"]:
        if mount["content_hash"] is not None:
            mount["source"] = f"repository:{mount['content_hash']}"
    if data["build"] is not None:
        data["build"].pop("context")
    # A secret's content enters as a keyed digest, like any secret value: a plain
    # digest on the label would let anyone test guesses of a short password.
    for key in _GRANT_KEYS:
        for grant, spec in zip(data.get(key, ()), getattr(service, key), strict=True):
            if spec.sensitive:
                grant["content_hash"] = secret_fingerprint(grant["content_hash"])
    if service.secret_values:
        data = _keyed(data, service.secret_values)
    return data


def _keyed(node: Any, secrets: frozenset[str]) -> Any:
    """``node`` with every string that holds a secret replaced by its keyed digest."""
    if isinstance(node, str):
        return secret_fingerprint(node) if any(s in node for s in secrets) else node
    if isinstance(node, dict):
        return {key: _keyed(value, secrets) for key, value in node.items()}
    if isinstance(node, list):
        return [_keyed(item, secrets) for item in node]
    return node
