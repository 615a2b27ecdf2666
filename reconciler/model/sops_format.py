"""Decrypt a SOPS file (dotenv, YAML or JSON) encrypted for an age recipient.

No ``sops`` binary exists for the VM's platform packages, so this is the
format itself, read from getsops/sops (``aes/cipher.go``, ``sops.go``,
``stores/``) and tested against files the real sops wrote:

- the data key (32 bytes) is age-encrypted (armored) once per recipient in
  ``sops.age[].enc`` (or ``sops.key_groups[0].age[]``);
- each value is ``ENC[AES256_GCM,data:B64,iv:B64,tag:B64,type:T]``, AES-256-GCM
  with a 32-byte nonce and, as additional data, the key path joined by ``:``
  plus a trailing ``:`` (``stringData:secret:``); list items keep their
  parent's path; an empty value is stored as an empty string, unencrypted;
- which values are encrypted follows the file's own rules
  (``unencrypted_suffix``, ``encrypted_suffix``, ``unencrypted_regex``,
  ``encrypted_regex``): a value the rules say is encrypted but is not is an
  error, so nobody can swap a ciphertext for a plain value;
- the MAC is SHA-512 over every value's plaintext in file order (only the
  encrypted ones, after a fixed prefix, with ``mac_only_encrypted``), as
  upper-case hex, stored encrypted with ``lastmodified`` as additional data.
  It MUST match: a file changed without the data key is rejected.

Pure: text and identities in, a tree out; ``SopsError`` says what is wrong
and never quotes a value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

import pyrage
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reconciler.model.yaml_lines import YamlError, load_yaml

SopsKind = Literal["dotenv", "yaml", "json"]

_ENC = re.compile(r"^ENC\[AES256_GCM,data:(.*),iv:(.*),tag:(.*),type:(.*)\]$", re.DOTALL)
# sha256(b"sops"): the MAC of a mac_only_encrypted file starts from it (sops.go).
_MAC_ONLY_ENCRYPTED_INIT = bytes.fromhex(
    "8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69"
)
_UNSUPPORTED_RULES = ("unencrypted_comment_regex", "encrypted_comment_regex")


class SopsError(ValueError):
    """A SOPS file that cannot be decrypted; the message names the problem, never a value."""


class NoMatchingKey(SopsError):
    """None of the identities opens the data key."""


def recipients(metadata: dict[str, Any]) -> list[str]:
    return [str(entry.get("recipient", "?")) for entry in _age_entries(metadata)]


def parse(text: str, kind: SopsKind) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tree, metadata)`` of an encrypted file, nothing decrypted yet."""
    if kind == "dotenv":
        return _parse_dotenv(text)
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SopsError(f"not valid JSON (line {exc.lineno}): {exc.msg}") from None
    else:
        try:
            data, _lines = load_yaml(text, path="", core_schema=True)
        except YamlError as exc:
            raise SopsError(exc.issue.message) from None
    if not isinstance(data, dict):
        raise SopsError("not a SOPS file: expected a mapping at the top")
    metadata = data.pop("sops", None)
    if not isinstance(metadata, dict):
        raise SopsError("not a SOPS file: no 'sops' metadata (encrypt it with sops --encrypt)")
    return data, metadata


def decrypt(text: str, kind: SopsKind, identities: Sequence[Any]) -> dict[str, Any]:
    """The decrypted tree of a SOPS file, its MAC checked."""
    tree, metadata = parse(text, kind)
    for rule in _UNSUPPORTED_RULES:
        if metadata.get(rule):
            raise SopsError(f"sops option {rule} is not supported here: encrypt without it")
    key = data_key(metadata, identities)
    rules = _Rules(metadata)
    digest = hashlib.sha512()
    if rules.mac_only_encrypted:
        digest.update(_MAC_ONLY_ENCRYPTED_INIT)
    plain = _walk(tree, [], key=key, rules=rules, digest=digest)
    _check_mac(metadata, key, digest.hexdigest().upper())
    assert isinstance(plain, dict)
    return plain


def data_key(metadata: dict[str, Any], identities: Sequence[Any]) -> bytes:
    entries = _age_entries(metadata)
    if not entries:
        kinds = [k for k in ("pgp", "kms", "gcp_kms", "azure_kv", "hc_vault") if metadata.get(k)]
        also = f" (it is encrypted with {', '.join(kinds)} only)" if kinds else ""
        raise SopsError(f"the file has no age recipient{also}: encrypt it with sops --age")
    for entry in entries:
        enc = entry.get("enc")
        if not isinstance(enc, str):
            continue
        try:
            key = pyrage.decrypt(enc.encode(), list(identities))
        except pyrage.DecryptError:
            continue
        if len(key) != 32:
            raise SopsError("the data key is not 32 bytes: the file is damaged")
        return bytes(key)
    raise NoMatchingKey("no identity opens the data key")


def _age_entries(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    entries = metadata.get("age")
    groups = metadata.get("key_groups")
    if not entries and isinstance(groups, list) and groups:
        if len(groups) > 1:
            raise SopsError("sops key groups (Shamir secret sharing) are not supported here")
        group = groups[0] if isinstance(groups[0], dict) else {}
        entries = group.get("age")
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict)]


class _Rules:
    """Which values the file says are encrypted (``shouldBeEncrypted`` in sops.go)."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.unencrypted_suffix = str(metadata.get("unencrypted_suffix") or "")
        self.encrypted_suffix = str(metadata.get("encrypted_suffix") or "")
        self.unencrypted_regex = _regex(metadata.get("unencrypted_regex"))
        self.encrypted_regex = _regex(metadata.get("encrypted_regex"))
        flag = metadata.get("mac_only_encrypted")
        self.mac_only_encrypted = flag is True or flag == "true"

    def encrypted(self, path: list[str]) -> bool:
        result = True
        if self.unencrypted_suffix and any(p.endswith(self.unencrypted_suffix) for p in path):
            result = False
        if self.encrypted_suffix:
            result = any(p.endswith(self.encrypted_suffix) for p in path)
        if self.unencrypted_regex and any(self.unencrypted_regex.search(p) for p in path):
            result = False
        if self.encrypted_regex:
            result = any(self.encrypted_regex.search(p) for p in path)
        return result


def _regex(value: Any) -> re.Pattern[str] | None:
    if not value:
        return None
    try:
        return re.compile(str(value))
    except re.error as exc:
        raise SopsError(f"the file's regex {value!r} is not valid here: {exc}") from None


def _walk(node: Any, path: list[str], *, key: bytes, rules: _Rules, digest: Any) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for name, value in node.items():
            if not isinstance(name, str):
                raise SopsError(f"key {name!r} at {_where(path)} is not a string")
            out[name] = _walk(value, [*path, name], key=key, rules=rules, digest=digest)
        return out
    if isinstance(node, list):
        # sops walks list items with their parent's path (walkSlice).
        return [_walk(item, path, key=key, rules=rules, digest=digest) for item in node]
    if node is None:
        return None  # sops neither decrypts nor hashes a null
    encrypted = rules.encrypted(path)
    plain: Any = node
    if encrypted:
        if not isinstance(node, str):
            raise SopsError(f"{_where(path)}: the value is not encrypted, but the file says it is")
        plain = decrypt_value(node, key, ":".join(path) + ":", where=_where(path))
    if encrypted or not rules.mac_only_encrypted:
        digest.update(_mac_bytes(plain))
    return plain


def decrypt_value(text: str, key: bytes, additional: str, *, where: str) -> Any:
    """One ``ENC[...]`` value, typed as sops typed it."""
    if text == "":
        return ""  # sops stores an empty value as it is
    match = _ENC.match(text)
    if match is None:
        raise SopsError(f"{where}: the value is not encrypted, but the file says it is")
    try:
        data, iv, tag = (base64.b64decode(match.group(i), validate=True) for i in (1, 2, 3))
    except (binascii.Error, ValueError):
        raise SopsError(f"{where}: the encrypted value is not valid base64") from None
    kind = match.group(4)
    try:
        raw = AESGCM(key).decrypt(iv, data + tag, additional.encode())
    except (InvalidTag, ValueError):
        raise SopsError(
            f"{where}: the value does not decrypt (it was changed, or moved from another key)"
        ) from None
    try:
        plain = raw.decode()
    except UnicodeDecodeError:
        raise SopsError(f"{where}: the value is not UTF-8 text") from None
    if kind in ("str", "comment"):
        return plain
    if kind in ("int", "int64"):
        return int(plain)
    if kind == "float":
        return float(plain)
    if kind == "bool":
        return plain.lower() in ("true", "1", "t")
    if kind == "bytes":
        return plain
    raise SopsError(f"{where}: unknown value type {kind!r}")


def _mac_bytes(value: Any) -> bytes:
    """``ToBytes`` of sops.go: how a value enters the MAC."""
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        # Go's strconv.FormatFloat(f, 'f', -1, 64): shortest digits, no exponent.
        text = format(Decimal(repr(value)), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text.encode()
    return str(value).encode()


def _check_mac(metadata: dict[str, Any], key: bytes, computed: str) -> None:
    stored = metadata.get("mac")
    if not isinstance(stored, str) or not stored:
        raise SopsError("the file has no MAC: it is not protected against changes")
    modified = metadata.get("lastmodified")
    if not isinstance(modified, str):
        raise SopsError("the file has no lastmodified: it is damaged")
    try:
        expected = decrypt_value(stored, key, modified, where="sops.mac")
    except SopsError:
        raise SopsError("MAC mismatch: the file was changed without its key") from None
    if not hmac.compare_digest(str(expected), computed):
        raise SopsError("MAC mismatch: the file was changed without its key")


def _where(path: list[str]) -> str:
    return ".".join(path) or "(top)"


# -- dotenv ----------------------------------------------------------------------


def _parse_dotenv(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``stores/dotenv``: KEY=VALUE lines, ``\\n`` escapes, ``sops_`` metadata flattened."""
    tree: dict[str, Any] = {}
    flat: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise SopsError(f"line {number}: not KEY=VALUE")
        value = value.replace("\\n", "\n")
        if name.startswith("sops_"):
            flat[name[len("sops_") :]] = value
        elif name in tree:
            raise SopsError(f"line {number}: {name} is set twice")
        else:
            tree[name] = value
    if not flat:
        raise SopsError("not a SOPS file: no sops_ metadata lines (encrypt it with sops)")
    return tree, _unflatten(flat)


_TOKEN = re.compile(r"__(map|list)_")


def _unflatten(flat: dict[str, str]) -> dict[str, Any]:
    """``age__list_0__map_enc`` -> ``{"age": [{"enc": ...}]}`` (stores/flatten.go)."""
    root: dict[str, Any] = {}
    for flat_key, value in flat.items():
        parts = _TOKEN.split(flat_key)
        # parts: [first, kind, name, kind, name, ...]
        steps: list[str | int] = [parts[0]]
        for kind, name in zip(parts[1::2], parts[2::2], strict=True):
            steps.append(int(name) if kind == "list" and name.isdigit() else name)
        node: Any = root
        for step, following in itertools.pairwise(steps):
            child: Any = [] if isinstance(following, int) else {}
            if isinstance(node, dict):
                node = node.setdefault(step, child)
            else:
                assert isinstance(step, int)
                while len(node) <= step:
                    node.append(None)
                if node[step] is None:
                    node[step] = child
                node = node[step]
        last = steps[-1]
        if isinstance(node, dict):
            node[str(last)] = value
        elif isinstance(last, int):
            while len(node) <= last:
                node.append(None)
            node[last] = value
    return root
