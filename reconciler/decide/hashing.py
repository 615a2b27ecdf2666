"""The config hash: one stable digest of a service's desired configuration.

It goes on the container as a label; a different hash means recreate (Compose
and doco-cd do the same). It covers everything that shapes the container,
including the contents of files from the repository (env_file values are in
``environment``; bind-mounted repo files and build contexts carry their own
content hashes), and nothing that does not (the commit, the reason).
"""

from __future__ import annotations

import hashlib
import json

from reconciler.model.desired import ServiceSpec

# Bump when the meaning of the hashed fields changes, so every container is
# recreated once rather than compared against an incompatible digest.
HASH_VERSION = "1"


def config_hash(service: ServiceSpec) -> str:
    """Hex SHA-256 of the service's normalised spec; stable across runs and dict order."""
    data = service.model_dump(mode="json")
    # depends_on shapes the order of a pass, not the container itself.
    data.pop("depends_on", None)
    canonical = json.dumps([HASH_VERSION, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
