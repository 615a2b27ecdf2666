"""Label keys that mark what the reconciler owns. Part of the contract: never rename."""

PREFIX = "dev.reconciler"
PROJECT = f"{PREFIX}.project"
SERVICE = f"{PREFIX}.service"
COMMIT = f"{PREFIX}.commit"
CONFIG_HASH = f"{PREFIX}.config-hash"
# JSON of short digests per part of the config (decide/hashing.py config_parts):
# what a recreate names as changed, read back from the container after a restart.
CONFIG_PARTS = f"{PREFIX}.config-parts"
NETWORK = f"{PREFIX}.network"
VOLUME = f"{PREFIX}.volume"
# Set on short-lived helper containers (volume access, backups): never services.
HELPER = f"{PREFIX}.helper"


def container_name(project: str, service: str) -> str:
    """Docker Compose's name for the single replica of a service."""
    return f"{project}-{service}-1"


def volume_name(project: str, key: str) -> str:
    return f"{project}_{key}"


def network_name(project: str, key: str) -> str:
    return f"{project}_{key}"


# On images the reconciler builds (besides the context hash): the project and
# service they were built for, so image garbage collection can tell them from
# images it did not make. Distinct keys from PROJECT/SERVICE on purpose: a
# container inherits its image's labels, and a container someone starts by
# hand from our image must never look like one of ours.
IMAGE_PROJECT = f"{PREFIX}.image.project"
IMAGE_SERVICE = f"{PREFIX}.image.service"
