"""What a service is given, read from the checkout: its environment and its files.

Part of the *resolve* step of a load (``model/loading.py`` drives it), as a
base of its loader: the values of ``environment`` and ``env_file`` (bare keys
filled from the environment, encrypted env files decrypted) and the content of
each secret and config a service is granted (a file, a variable, inline text,
or an encrypted file decrypted), each checked to stay inside the checkout and
within its size cap. Problems are added at their lines, as the checks do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from reconciler.errors import InvalidDesiredState
from reconciler.model.compose_checks import ComposeChecks, GrantSection, grant_target
from reconciler.model.compose_grants import ServiceFileGrant
from reconciler.model.compose_schema import Service
from reconciler.model.desired import FileGrant
from reconciler.model.interpolation import ENV_FILE_HINT
from reconciler.model.secrets import Secrets, decrypted_text, is_encrypted_name
from reconciler.model.text_files import decode_text, parse_env_text
from reconciler.model.yaml_lines import KeyPath

# Swarm caps a secret at 500 KB and a config at 1000 KB; one cap for both here,
# as the content is held in memory and copied into each container.
MAX_GRANT_BYTES = 1024 * 1024
# Docker's own caps on a Swarm secret and config.
SWARM_GRANT_BYTES = {"secrets": 500 * 1024, "configs": 1000 * 1024}


class ContentReading(ComposeChecks):
    """Reads a service's environment and the contents of its secrets and configs."""

    secrets: Secrets

    def _inside(self, path: Path) -> bool:
        """Whether ``path`` (symlinks followed) is in the checkout. The checks report
        those that are not; resolving must not read or hash them (``../..`` could be
        the whole disk, and files there change while they are walked)."""
        return path.resolve().is_relative_to(self.root.resolve())

    def _from_environ(
        self, where: KeyPath, key: str, value: str | None, *, env_file: str | None = None
    ) -> str | None:
        """A value, or for a bare key the variable of the same name (an error when unset)."""
        if value is not None:
            return value
        from_env = self.environ.get(key)
        if from_env is None:
            fix = (
                f"write its value in {env_file}" if env_file else "write its value in compose.yaml"
            )
            self.add(
                where,
                f"variable {key} is not set (set it in the env file on the VM, {ENV_FILE_HINT}, "
                f"or {fix})",
            )
        return from_env

    def _decrypted(self, where: KeyPath, shown: str) -> dict[str, str] | None:
        """The values of the encrypted file ``shown``; None after an issue, said once:
        the secrets reader reports a file it could not decrypt, this one a file it
        never read because it lies outside the desired-state folder."""
        decrypted = self.secrets.files.get(shown)
        if decrypted is None and not any(i.path == shown for i in self.secrets.issues):
            folder = os.path.relpath(self.compose_dir, self.root)
            self.add(
                where,
                f"{shown} is an encrypted file outside {folder}/: "
                "keep encrypted files in the desired-state folder",
            )
        return decrypted

    def _environment(self, base: KeyPath, svc: Service) -> dict[str, str]:
        env: dict[str, str] = {}
        for index, env_file in enumerate(svc.env_file):
            path = Path(os.path.normpath(self.compose_dir / env_file.path))
            if not path.is_file() or not self._inside(path):
                continue  # reported by the checks, or optional
            where = self._list_item(base, "env_file", index)
            # interpolate=False: values are taken literally, never filled from
            # the reconciler's own process environment.
            shown = os.path.relpath(path, self.root)
            if is_encrypted_name(path.name):
                decrypted = self._decrypted(where, shown)
                env.update(decrypted or {})
                continue
            try:
                text = decode_text(path.read_bytes(), path=shown)
            except InvalidDesiredState as exc:
                self.issues.extend(exc.issues)
                continue
            values, problems = parse_env_text(text, path=shown)
            self.issues.extend(problems)
            for key, value in values.items():
                resolved = self._from_environ(where, key, value, env_file=shown)
                if resolved is not None:
                    env[key] = resolved
        for key, value in svc.environment.items():
            resolved = self._from_environ(self._entry(base, "environment", key), key, value)
            if resolved is not None:
                env[key] = resolved
        return env

    def _grants(
        self, section: GrantSection, grants: list[ServiceFileGrant]
    ) -> tuple[FileGrant, ...]:
        """A service's ``secrets`` or ``configs``, each with the content of its source."""
        out: list[FileGrant] = []
        for grant in grants:
            found = self._grant_content(section, grant.source)
            if found is None:
                continue  # reported by the checks, or by _grant_content once
            content, sensitive = found
            out.append(
                FileGrant(
                    name=grant.source,
                    target=grant_target(section, grant),
                    uid=grant.uid or 0,
                    gid=grant.gid or 0,
                    mode=0o444 if grant.mode is None else grant.mode,
                    content_hash=hashlib.sha256(content).hexdigest(),
                    content=content,
                    sensitive=sensitive,
                )
            )
        return tuple(out)

    def _grant_content(self, section: GrantSection, key: str) -> tuple[bytes, bool] | None:
        """The content of a top-level secret or config, and whether it is secret; None
        after an issue. Read once per load, so an issue is reported once."""
        if (section, key) not in self.grant_contents:
            self.grant_contents[(section, key)] = self._read_grant(section, key)
        return self.grant_contents[(section, key)]

    def _read_grant(self, section: GrantSection, key: str) -> tuple[bytes, bool] | None:
        declared = self.granted[section].get(key)
        if declared is None:
            return None
        secret_values = self.secrets.secret_values()
        if declared.file is not None:
            path = Path(os.path.normpath(self.compose_dir / declared.file))
            if not path.is_file() or not self._inside(path):
                return None  # reported by the checks
            shown = os.path.relpath(path, self.root)
            if is_encrypted_name(path.name):
                decrypted = self._decrypted((section, key, "file"), shown)
                if decrypted is None:
                    return None
                return decrypted_text(path.name, decrypted).encode(), True
            size = path.stat().st_size
            limit = SWARM_GRANT_BYTES[section] if self.engine_mode == "swarm" else MAX_GRANT_BYTES
            if size > limit:
                kind = section[:-1]
                why = (
                    f"Swarm keeps a {kind} in its own store, at most"
                    if self.engine_mode == "swarm"
                    else f"a {kind} is put into the container in memory, so it may hold at most"
                )
                self.add(
                    (section, key, "file"),
                    f"{shown} holds {size} bytes: {why} {limit // 1024} KiB "
                    "(mount a larger file as a volume instead)",
                )
                return None
            return path.read_bytes(), section == "secrets"
        if declared.environment is not None:
            value = self.environ.get(declared.environment)
            if value is None:
                self.add(
                    (section, key, "environment"),
                    f"variable {declared.environment} is not set (set it in the env file on "
                    f"the VM, {ENV_FILE_HINT})",
                )
                return None
            return value.encode(), section == "secrets" or value in secret_values
        content = getattr(declared, "content", None) or ""
        # Inline content was interpolated: it may hold a value from an encrypted file.
        sensitive = any(v and v in content for v in secret_values)
        return content.encode(), sensitive
