"""The VM's age key: read it, make one, and decrypt a commit's secrets with it.

``RECONCILER_AGE_KEY_FILE`` (default ``/etc/reconciler/age.key``) holds one or
more age identities (``AGE-SECRET-KEY-1...`` lines, as ``age-keygen`` writes
them) or an OpenSSH ed25519/RSA private key. It is read at every load, so a key
installed or rotated on the VM is used by the next pass without a restart. It
never leaves the VM: it is not logged, not copied into the state folder, not
given to any container.

A missing key is no error until a commit holds an encrypted file; then that
file's issue says so (``model/secrets.py``).
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage

from reconciler.errors import KeyFileError
from reconciler.logs import event
from reconciler.model.secrets import Keyring, Secrets, read_secrets
from reconciler.redaction import register_secret, set_fingerprint_key
from reconciler.settings import Settings
from reconciler.state.files import private_dir


def load_keyring(path: Path) -> Keyring:
    """The identities in ``path``; a keyring with a ``problem`` when there are none."""
    source = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Keyring(
            source,
            problem=f"this VM has no age key: {source} does not exist "
            "(create it with: reconciler secrets keygen; see RECONCILER_AGE_KEY_FILE)",
        )
    except OSError as exc:
        return Keyring(source, problem=f"cannot read the age key {source}: {exc.strerror}")
    identities: list[Any] = []
    recipients: list[str] = []
    if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        try:
            identities.append(pyrage.ssh.Identity.from_buffer(data))
        except Exception as exc:  # pyrage raises its own types, none exported for ssh
            return Keyring(source, problem=f"{source}: not a usable SSH private key ({exc})")
        recipients.append("an SSH key")
    else:
        for number, raw in enumerate(data.decode(errors="replace").splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                identity = pyrage.x25519.Identity.from_str(line)
            except pyrage.IdentityError:
                # Never quote the line: it may be a key with a typo.
                return Keyring(source, problem=f"{source}:{number}: not an age identity")
            identities.append(identity)
            recipients.append(str(identity.to_public()))
    if not identities:
        return Keyring(source, problem=f"{source} holds no age identity")
    # The key itself is a secret of this process; and it keys the fingerprints
    # of secret values in config-hash labels (redaction.secret_fingerprint).
    text = data.decode(errors="replace")
    for line in text.splitlines():
        if line.strip().startswith("AGE-SECRET-KEY-"):
            register_secret(line.strip())
    set_fingerprint_key(hashlib.sha256(b"reconciler config-hash key\0" + data).digest())
    return Keyring(source, identities=tuple(identities), recipients=tuple(recipients))


def load_secrets(root: Path, settings: Settings) -> Secrets:
    """The commit's decrypted secrets, with the VM's key (problems are in ``issues``)."""
    keyring = load_keyring(settings.age_key_file)
    secrets = read_secrets(root, directory=settings.directory, keyring=keyring)
    for where in secrets.too_short:
        event(
            "secrets.too_short",
            level=30,
            variable=where,
            message="a value this short cannot be masked in logs; use a longer secret",
        )
    shadowed = sorted(k for k in secrets.values if k in settings.environ)
    if shadowed:
        # The VM's environment wins (like Compose's shell over .env): say so.
        event("secrets.overridden_by_vm", level=20, variables=", ".join(shadowed))
    return secrets


def recipient_of(path: Path) -> list[str]:
    """The public keys of the identities in ``path`` (``reconciler secrets recipient``)."""
    keyring = load_keyring(path)
    if keyring.problem:
        raise KeyFileError(keyring.problem)
    return list(keyring.recipients)


def keygen(path: Path) -> str:
    """Write a new identity to ``path`` (mode 0600, never over an existing file)."""
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now(UTC).isoformat(timespec="seconds")
    body = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    # Created 0700; an existing folder is the user's (``--key-file ~/age.key``).
    private_dir(path.parent, tighten=False)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} exists: keep it (reconciler secrets recipient prints its public key), "
            "or move it away first"
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    return recipient
