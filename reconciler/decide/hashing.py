"""The config hash: one stable digest of a service's desired configuration.

It goes on the container as a label; a different hash means recreate (Compose
and doco-cd do the same). It covers everything that shapes the container,
including the contents of files from the repository (env_file values are in
``environment``; bind-mounted repo files and build contexts carry their own
content hashes), and nothing that does not (the commit, the reason).

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


def config_hash(service: ServiceSpec) -> str:
    """Hex SHA-256 of the service's normalised spec; stable across runs and dict order."""
    data = service.model_dump(mode="json")
    # depends_on shapes the order of a pass, not the container itself.
    data.pop("depends_on", None)
    # Files from the repository live in a folder per commit: hash what they
    # hold, not where they are, or every commit would recreate the service.
    for mount in data["mounts"]:
        if mount["content_hash"] is not None:
            mount["source"] = f"repository:{mount['content_hash']}"
    if data["build"] is not None:
        data["build"].pop("context")
    if service.secret_values:
        data = _keyed(data, service.secret_values)
    canonical = json.dumps([HASH_VERSION, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _keyed(node: Any, secrets: frozenset[str]) -> Any:
    """``node`` with every string that holds a secret replaced by its keyed digest."""
    if isinstance(node, str):
        return secret_fingerprint(node) if any(s in node for s in secrets) else node
    if isinstance(node, dict):
        return {key: _keyed(value, secrets) for key, value in node.items()}
    if isinstance(node, list):
        return [_keyed(item, secrets) for item in node]
    return node
