"""Encrypted files of a commit: the values they hold for ``${VAR}`` interpolation.

Part of the *validate* step. Files in the desired-state folder named

- ``*.sops.env``, ``*.sops.yaml`` / ``*.sops.yml``, ``*.sops.json``: SOPS files
  encrypted for an age recipient (``model/sops_format.py``), flat: each key a
  variable, each value a scalar;
- ``*.env.age``: a dotenv file encrypted with ``age -r`` (armored or binary);

are decrypted with the VM's age identities (a ``Keyring`` read by
``secret_keys.py``; its key never leaves the VM). Files at the top of
the folder fill ``${VAR}``; every encrypted file of the folder (subfolders
included) may also be named by a service's ``env_file:``.

Every value read is registered with ``reconciler.redaction`` before anything
can quote it. A file that cannot be decrypted is an issue
``desired-state/x.sops.env:0: cannot decrypt: ...``, so the commit stalls and
nothing running changes. The only I/O is reading the checkout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage
import yaml

from reconciler.errors import Issue
from reconciler.model import sops_format
from reconciler.model.sops_format import SopsError, SopsKind
from reconciler.model.text_files import parse_env_text
from reconciler.redaction import register_secret

_SOPS_SUFFIXES: dict[str, SopsKind] = {
    ".sops.env": "dotenv",
    ".sops.yaml": "yaml",
    ".sops.yml": "yaml",
    ".sops.json": "json",
}
AGE_ENV_SUFFIX = ".env.age"


@dataclass(frozen=True)
class Keyring:
    """The VM's age identities, or why there are none (read once per load)."""

    source: str  # the key file, for messages
    identities: tuple[Any, ...] = ()
    recipients: tuple[str, ...] = ()  # their public keys (age1..., or "ssh key")
    problem: str | None = None  # e.g. "/etc/reconciler/age.key does not exist"


@dataclass
class Secrets:
    """What a commit's encrypted files hold."""

    values: dict[str, str] = field(default_factory=dict)  # top-level files: for ${VAR}
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # repo path -> values
    sources: dict[str, str] = field(default_factory=dict)  # variable -> repo path
    issues: list[Issue] = field(default_factory=list)
    too_short: list[str] = field(default_factory=list)  # keys whose values are not masked

    def secret_values(self) -> set[str]:
        return {v for values in self.files.values() for v in values.values()}


def is_encrypted_name(name: str) -> bool:
    return name.endswith(AGE_ENV_SUFFIX) or any(name.endswith(s) for s in _SOPS_SUFFIXES)


def read_secrets(root: Path, *, directory: str, keyring: Keyring) -> Secrets:
    """Decrypt every encrypted file under ``<root>/<directory>``; problems become issues."""
    secrets = Secrets()
    folder = root / directory
    inside = root.resolve()
    if not folder.is_dir() or not folder.resolve().is_relative_to(inside):
        return secrets  # the loader says what is wrong with the folder
    for path in sorted(_encrypted_files(folder)):
        shown = os.path.relpath(path, root)
        if not path.resolve().is_relative_to(inside):
            # A committed symlink must not make the VM read its own files.
            secrets.issues.append(Issue(shown, 0, "", "a symlink out of the repository"))
            continue
        try:
            values = decrypt_file(path, keyring=keyring)
        except SopsError as exc:
            secrets.issues.append(Issue(shown, 0, "", f"cannot decrypt: {exc}"))
            continue
        secrets.files[shown] = values
        for key, value in values.items():
            if not register_secret(value) and value:
                secrets.too_short.append(f"{shown}: {key}")
        if path.parent == folder:
            for key, value in values.items():
                earlier = secrets.sources.get(key)
                if earlier is not None:
                    secrets.issues.append(
                        Issue(shown, 0, key, f"also set in {earlier}: set each variable once")
                    )
                    continue
                secrets.values[key] = value
                secrets.sources[key] = shown
    return secrets


def decrypted_text(name: str, values: Mapping[str, str]) -> str:
    """An encrypted file's content as a secret or config file gets it: the decrypted
    variables in the file's own format (dotenv, YAML or JSON), without SOPS' metadata.

    The files are flat (one variable per key, ``decrypt_file``), so this is what
    the user wrote before encrypting, up to quoting and comments.
    """
    kind = "dotenv" if name.endswith(AGE_ENV_SUFFIX) else _sops_kind(name)
    if kind == "json":
        return json.dumps(dict(values), indent=2) + "\n"
    if kind == "yaml":
        return str(yaml.safe_dump(dict(values), sort_keys=False, allow_unicode=True))
    return "".join(f"{key}={_dotenv_value(value)}\n" for key, value in values.items())


def _sops_kind(name: str) -> SopsKind:
    return next(k for suffix, k in _SOPS_SUFFIXES.items() if name.endswith(suffix))


def _dotenv_value(value: str) -> str:
    """A value as a dotenv line reads it back (python-dotenv's double quotes when needed)."""
    if value and all(c.isalnum() or c in "_-./:@+,=%" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _encrypted_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if is_encrypted_name(name):
                yield Path(dirpath) / name


def decrypt_file(path: Path, *, keyring: Keyring) -> dict[str, str]:
    """The variables of one encrypted file; ``SopsError`` says what is wrong."""
    if keyring.problem is not None:
        raise SopsError(keyring.problem)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SopsError(f"cannot read the file: {exc.strerror}") from None
    if path.name.endswith(AGE_ENV_SUFFIX):
        return _age_env(data, keyring)
    kind = _sops_kind(path.name)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise SopsError("not a UTF-8 text file") from None
    try:
        tree = sops_format.decrypt(text, kind, keyring.identities)
    except sops_format.NoMatchingKey:
        _tree, metadata = sops_format.parse(text, kind)
        raise SopsError(
            _no_match(keyring, for_whom=", ".join(sops_format.recipients(metadata)) or "nobody")
        ) from None
    return _flat(tree)


def _flat(tree: Mapping[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict | list):
            raise SopsError(
                f"{key}: a nested value; write one variable per key (KEY: value), "
                "since each key fills ${KEY} in compose.yaml"
            )
        if value is None:
            raise SopsError(f"{key}: has no value")
        if isinstance(value, bool):
            values[key] = "true" if value else "false"
        else:
            values[key] = str(value)
    return values


def _age_env(data: bytes, keyring: Keyring) -> dict[str, str]:
    try:
        plain = pyrage.decrypt(data, list(keyring.identities))
    except pyrage.DecryptError as exc:
        if "No matching keys" in str(exc):
            raise SopsError(_no_match(keyring, for_whom=None)) from None
        raise SopsError(f"not an age file, or a damaged one ({exc})") from None
    try:
        text = bytes(plain).decode()
    except UnicodeDecodeError:
        raise SopsError("the decrypted file is not UTF-8 text") from None
    parsed, problems = parse_env_text(text, path="")
    if problems:
        first = problems[0]
        raise SopsError(f"line {first.line} of the decrypted file: {first.message}")
    values: dict[str, str] = {}
    for key, value in parsed.items():
        if value is None:
            raise SopsError(f"{key}: has no value (write {key}=VALUE)")
        values[key] = value
    return values


def _no_match(keyring: Keyring, *, for_whom: str | None) -> str:
    has = ", ".join(keyring.recipients) or "no identity"
    whom = f"the file is for {for_whom}; " if for_whom else ""
    return (
        f"no matching key: {whom}this VM's key file {keyring.source} holds {has} "
        "(re-encrypt the file for this VM's recipient: reconciler secrets recipient)"
    )
