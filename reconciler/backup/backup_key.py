"""The backup key: the one restic password of every backup repository of the business.

``RECONCILER_BACKUP_KEY`` opens prod, dev and the safety copies alike, so a
backup made on one VM (or a developer's PC) can be restored on another. It
lives in the env file only (install.sh makes it once, mode 600), never in git,
never in a message. ``open_repository`` is how every command and flow turns a
target URL into a ``restic.Repository`` with it; ``check_new_key`` is the rule
for a key given to ``reconciler backup key add`` (a rotation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.adapters.restic import Key, Repository, Runner, strip_credentials
from reconciler.errors import BackupKeyMissing, BackupKeyRefused
from reconciler.redaction import register_secret
from reconciler.settings import DEFAULT_ENV_FILE

VARIABLE = "RECONCILER_BACKUP_KEY"
# Short keys are refused: a stray "y" on stdin must not become a key of the
# backups. install.sh makes 64 hex digits; a long passphrase is fine too.
MIN_NEW_KEY_LENGTH = 16


def env_file_of(environ: Mapping[str, str], env_file: Path | str | None = None) -> str:
    """The env file a key belongs in: the one read, else the one that would be."""
    if env_file is not None:
        return str(env_file)
    return environ.get("RECONCILER_ENV_FILE") or DEFAULT_ENV_FILE


def open_repository(
    target: str,
    environ: Mapping[str, str],
    *,
    env_file: Path | str | None = None,
    runner: Runner | None = None,
    cache_dir: str | None = None,
) -> Repository:
    """The restic repository at ``target`` opened with ``environ``'s backup key.

    ``environ`` is the merged environment (``Settings.environ``): it also gives
    restic its S3 credentials and endpoint. Nothing is run yet: a wrong key
    shows as ``WrongKey`` on the first command.
    """
    key = environ.get(VARIABLE, "")
    if not key:
        where = env_file_of(environ, env_file)
        raise BackupKeyMissing(
            f"{VARIABLE} is not set, and it is the key of every backup "
            f"({strip_credentials(target)} cannot be opened without it): put it in {where} "
            "(install.sh writes one on a new VM; after a lost VM, the one kept in your "
            "password manager: docs/operations.md, section 8)"
        )
    # Masked in every later line this process prints or logs: restic's stderr
    # is quoted in errors, and nothing may ever echo the key back.
    register_secret(key)
    return Repository(target, key=key, env=environ, runner=runner, cache_dir=cache_dir)


def check_new_key(new_key: str, *, current: str) -> str:
    """``new_key`` as it will be stored (surrounding whitespace dropped), or why not.

    restic strips the password file it is given, and the env file drops the
    spaces around a value: stripping here keeps the two the same key.
    """
    key = new_key.strip()
    if not key:
        raise BackupKeyRefused("the new key is empty")
    if "\n" in key or "\r" in key:
        raise BackupKeyRefused("the new key holds a line break: the env file cannot keep it")
    if len(key) < MIN_NEW_KEY_LENGTH:
        raise BackupKeyRefused(
            f"the new key is {len(key)} characters long; give at least {MIN_NEW_KEY_LENGTH} "
            "(e.g. od -An -N32 -tx1 /dev/urandom | tr -d ' \\n')"
        )
    if key == current:
        raise BackupKeyRefused(f"the new key is the one in use ({VARIABLE}): give another")
    return key


def key_to_remove(keys: Sequence[Key], key_id: str) -> Key:
    """The one key of ``keys`` whose id starts with ``key_id``; never the one in use."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", key_id):
        raise BackupKeyRefused(
            f"{key_id[:80]!r} is not a key id (hex digits, as reconciler backup key list prints)"
        )
    matches = [k for k in keys if k.id.startswith(key_id)]
    if not matches:
        known = ", ".join(k.id for k in keys) or "none"
        raise BackupKeyRefused(f"no key {key_id} in the repository (its keys: {known})")
    if len(matches) > 1:
        raise BackupKeyRefused(
            f"{key_id} is the start of {len(matches)} key ids: give more of it "
            f"({', '.join(k.id for k in matches)})"
        )
    (key,) = matches
    if key.current:
        raise BackupKeyRefused(
            f"key {key.id} is the one in use ({VARIABLE}): add a new key, put it in the "
            "env file, and remove this one with the new key in use"
        )
    return key
