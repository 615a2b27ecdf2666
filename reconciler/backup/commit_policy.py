"""A commit's backup.yaml, as the pass checks it: part of the commit's validation.

A bad backup.yaml stalls the commit like a bad compose.yaml (unknown volumes,
services, keys...). Kept apart from the backup jobs so that a pass loads only
the policy's model, not restic and S3.
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.model.backup_policy import BackupPolicy, load_backup_policy
from reconciler.model.desired import DesiredState
from reconciler.ports import Checkout
from reconciler.settings import Settings


def backup_policy(
    checkout: Checkout, desired: DesiredState, settings: Settings
) -> BackupPolicy | None:
    """The backup.yaml of a commit (None when it has none); raises InvalidDesiredState."""
    return load_backup_policy(
        checkout.root,
        directory=settings.directory,
        desired=desired,
        environ=settings.environ,
        default_target=settings.default_backup_target,
    )


def backup_validator(settings: Settings) -> Callable[[Checkout, DesiredState], None]:
    """The pass's check of backup.yaml at commit time."""

    def validate_backup_yaml(checkout: Checkout, desired: DesiredState) -> None:
        backup_policy(checkout, desired, settings)

    return validate_backup_yaml
