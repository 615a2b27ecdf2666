"""The applied commit: what backups, restores by hand and the drill work on.

The stack as it was last deployed (the status file's applied commit), not
the branch's head: its checkout and its desired state, secrets decrypted.
Below the flows that use it (backup/, restore/, deploy/), so none of them
reaches up into the wiring for it.
"""

from __future__ import annotations

from reconciler.adapters.git_source import GitSource
from reconciler.model.desired import DesiredState
from reconciler.model.loading import load_desired_state
from reconciler.ports import Checkout
from reconciler.secret_keys import load_secrets
from reconciler.settings import Settings
from reconciler.state.status import StatusStore


def make_source(settings: Settings) -> GitSource:
    return GitSource(
        settings.repo,
        branch=settings.branch,
        cache_dir=settings.checkouts_dir,
        ssh_key=settings.ssh_key,
        known_hosts=settings.known_hosts,
    )


def load_applied(settings: Settings) -> tuple[Checkout, DesiredState] | None:
    """The applied commit's files and desired state; None before the first sync."""
    status = StatusStore(settings.state_dir).load()
    commit = status.applied_commit
    if commit is None:
        return None
    checkout = make_source(settings).checkout(commit)
    desired = load_desired_state(
        checkout.root,
        directory=settings.directory,
        project=settings.project,
        environ=settings.environ,
        secrets=load_secrets(checkout.root, settings),
        engine_mode=status.applied_engine,
    )
    return checkout, desired
