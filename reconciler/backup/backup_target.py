"""A backup target as the flows see it: one URL, two formats.

``s3://BUCKET/PREFIX`` or ``file:///PATH`` holds, at the same prefix:

- the restic repository that every new backup goes to (``config``, ``data/``,
  ``index/``, ``keys/``, ``snapshots/``), opened with ``RECONCILER_BACKUP_KEY``;
- the folders ``<id>/`` of backups made before restic was the engine (format
  1: zstd artifacts and a ``manifest.json``), listed and restorable until
  retention removes them. Nothing new is written in that format.

Neither gets in the other's way: restic's names are never backup ids, and the
old listing skips whatever is not one.

A restore's safety copy is a backup in the repository of the environment's
target, tagged ``safety-copy=<request>``, so that it shares every unchanged
block with the backups already there (a copy of a volume the last backup
holds costs a scan, not a second upload). Its URL keeps the form
``<target>/pre-restore/<request>``: that target lists only the copies of that
request (and old-format copies in that folder), and the target itself never
lists a safety copy, so neither ``latest`` nor retention ever sees one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.adapters import restic
from reconciler.adapters.object_store import ObjectStore, open_store
from reconciler.backup.backup_key import open_repository
from reconciler.errors import ReconcilerError
from reconciler.model.restore_requests import REQUEST_ID
from reconciler.state.files import private_dir


@dataclass
class BackupTarget:
    """A target URL, its object store (old backups) and its restic repository."""

    url: str
    store: ObjectStore
    env: Mapping[str, str] = field(repr=False, default_factory=dict)
    # Where the restic repository is: ``url`` itself, or for a safety copy's
    # URL the target it is inside of.
    repository_url: str = ""
    safety_copy: str | None = None  # the request whose safety copies this target lists
    cache_dir: Path | None = None
    legacy_only: bool = False  # a store of old-format copies: no repository is looked for
    # The last snapshot listing (restic_backups.stored_backups), dropped by every
    # write: each restic command opens the key (about half a second of KDF), so a
    # backup or a restore lists once, not once per question.
    listing: list[Any] | None = field(default=None, repr=False)
    absent: bool = field(default=False, repr=False)  # the listing found no repository

    def repository(self, runner: restic.Runner | None = None) -> restic.Repository:
        """The restic repository of the target; ``BackupKeyMissing`` without the key."""
        if self.cache_dir is not None and runner is None:
            private_dir(self.cache_dir)
        return open_repository(
            self.repository_url or self.url,
            self.env,
            runner=runner,
            # A helper keeps its own cache in a volume (restic_helper.py).
            cache_dir=str(self.cache_dir) if self.cache_dir and runner is None else None,
        )

    @property
    def local_path(self) -> str | None:
        """The folder of a ``file://`` target (a helper must mount it), else None."""
        url = restic.repository_url(self.repository_url or self.url, self.env)
        return url if url.startswith("/") else None

    @property
    def tags(self) -> list[str]:
        """What every snapshot written to this target carries beyond the backup's own tags."""
        return [safety_copy_tag(self.safety_copy)] if self.safety_copy else []


SAFETY_PREFIX = "pre-restore"
SPOOL_DIR_VARIABLE = "RECONCILER_SPOOL_DIR"
SAFETY_TAG = "safety-copy"


def safety_copy_tag(request_id: str) -> str:
    return f"{SAFETY_TAG}={request_id}"


def safety_url(target: str, request_id: str) -> str:
    """Where the safety copy of ``request_id`` goes; the id must not lead out of the prefix."""
    if not REQUEST_ID.fullmatch(request_id):
        raise ReconcilerError(f"{request_id[:120]!r} cannot name a safety copy; refused")
    return f"{target.rstrip('/')}/{SAFETY_PREFIX}/{request_id}"


def _split_safety_url(url: str) -> tuple[str, str | None]:
    """``<target>/pre-restore/<request>`` -> (target, request); any other URL -> (url, None)."""
    head, _, request = url.rstrip("/").rpartition("/")
    parent, _, prefix = head.rpartition("/")
    if prefix == SAFETY_PREFIX and REQUEST_ID.fullmatch(request) and "://" in parent:
        return parent, request
    return url, None


def open_target(
    url: str, environ: Mapping[str, str], *, state_dir: Path | None = None
) -> BackupTarget:
    """The target at ``url``; the key comes from ``environ`` (the merged env file).

    A safety copy's URL (``<target>/pre-restore/<request>``) opens the
    target's repository, narrowed to that request's copies. restic's own
    cache goes where the spool goes (``RECONCILER_SPOOL_DIR``, else the state
    folder): a cache grows with the repository, and a small state disk is
    what that setting is for.
    """
    repository_url, request = _split_safety_url(url)
    spool = environ.get(SPOOL_DIR_VARIABLE, "").strip()
    cache_root = Path(spool) if spool else state_dir
    return BackupTarget(
        url=url,
        store=open_store(url),
        env=dict(environ),
        cache_dir=None if cache_root is None else cache_root / "restic-cache",
        repository_url=repository_url,
        safety_copy=request,
    )


def legacy_target(store: ObjectStore) -> BackupTarget:
    """A target of old-format backups only (a restore's safety copies)."""
    return BackupTarget(url=store.url, store=store, legacy_only=True)
