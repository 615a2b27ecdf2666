"""Run-time settings, read once from the environment and the env file.

Real environment variables win over the env file (``/etc/reconciler/reconciler.env``
or ``RECONCILER_ENV_FILE``), like Compose's ``.env``. The merged mapping is also
what ``${VAR}`` in compose.yaml is filled from, so secrets can live on the VM.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reconciler.decide.verification import SignaturePolicy
from reconciler.errors import SettingsError
from reconciler.state import names

DEFAULT_ENV_FILE = "/etc/reconciler/reconciler.env"
# /healthz and /metrics: loopback by default, so nothing off the VM (or in
# another container) reaches them unless the operator says so. 9365 is in the
# range Prometheus exporters use and taken by nothing in the default stack.
DEFAULT_METRICS_ADDR = "127.0.0.1:9365"
# A shorter shared secret could be guessed offline from one signed delivery.
MIN_WEBHOOK_SECRET = 16
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


class Settings(BaseModel):
    """Everything the reconciler is told by its environment. Frozen: read once per process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: str = Field(description="RECONCILER_REPO: git URL or local path")
    branch: str = "main"
    directory: str = "desired-state"
    interval_s: float = Field(default=60.0, gt=0)
    state_dir: Path = Path("/var/lib/reconciler")
    project: str | None = None
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    log_format: str = "auto"  # auto | json | text
    backup_dir: Path | None = None  # where file:// backups go when backup.yaml names no target
    # Where a restore keeps the verified copy of a backup before it writes
    # anything (``<spool_dir>/restore-tmp/<id>``); default: the state dir.
    spool_dir: Path | None = None
    env_file: Path | None = None
    # Notifications (docs/notifications.md). URLs and the token are secrets:
    # kept out of repr, never logged in full.
    notify_webhook_url: str | None = Field(default=None, repr=False)
    notify_slack_url: str | None = Field(default=None, repr=False)
    commit_status_token: str | None = Field(default=None, repr=False)
    commit_status_provider: str | None = None  # github | gitea | bitbucket; guessed from repo
    commit_status_api: str | None = None  # API base, e.g. https://ghe.example.com/api/v3
    backup_ping_url: str | None = Field(default=None, repr=False)
    metrics_addr: str = DEFAULT_METRICS_ADDR  # HOST:PORT, [IPv6]:PORT, or off
    # Deploy on push (docs/webhooks.md): POST /hooks/push on the metrics
    # address, served only when this shared secret is set. A secret: never logged.
    webhook_secret: str | None = Field(default=None, repr=False)
    # Signed commits (docs/signing.md): off, or the kind of signature a commit
    # needs to be applied, checked against these keys.
    verify: Literal["off", "ssh", "gpg"] = "off"
    # The kind of engine (model/engine_mode.py): one Docker engine, a Swarm
    # manager, or auto: whatever the engine says it is (``docker info``).
    engine: Literal["auto", "engine", "swarm"] = "auto"
    allowed_signers: Path = Path("/etc/reconciler/allowed_signers")
    gpg_home: Path = Path("/etc/reconciler/gnupg")
    # The VM's age identities, for encrypted files in the desired state (docs/secrets.md).
    age_key_file: Path = Path("/etc/reconciler/age.key")
    # The merged environment (env file overlaid by the process environment):
    # the source of ${VAR} in desired-state files. Never logged.
    environ: dict[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in {"auto", "json", "text"}:
            raise ValueError("must be auto, json or text")
        return value

    @field_validator("commit_status_provider")
    @classmethod
    def _known_provider(cls, value: str | None) -> str | None:
        if value is not None and value not in {"github", "gitea", "bitbucket"}:
            raise ValueError("must be github, gitea or bitbucket")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _strong_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value.strip()) < MIN_WEBHOOK_SECRET:
            # The value itself never goes into the message.
            raise ValueError(
                f"must be at least {MIN_WEBHOOK_SECRET} characters, or unset to turn the "
                "webhook off; make one with: openssl rand -hex 32"
            )
        return value.strip() if value is not None else None

    @field_validator("metrics_addr")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        parse_listen_address(value)
        return value.strip()

    @property
    def metrics_bind(self) -> tuple[str, int] | None:
        """Where /healthz and /metrics listen; None when turned off."""
        return parse_listen_address(self.metrics_addr)

    @model_validator(mode="after")
    def _keys_exist(self) -> Settings:
        # A verification mode without its keys must not quietly verify
        # nothing (or reject everything): say so when the process starts.
        if self.verify == "ssh":
            _check_allowed_signers(self.allowed_signers)
        elif self.verify == "gpg":
            _check_gpg_home(self.gpg_home)
        return self

    @property
    def signature_policy(self) -> SignaturePolicy | None:
        """What a commit is verified against; None when verification is off."""
        if self.verify == "off":
            return None
        return SignaturePolicy(
            mode=self.verify, allowed_signers=self.allowed_signers, gpg_home=self.gpg_home
        )

    @property
    def checkouts_dir(self) -> Path:
        return self.state_dir / names.GIT_CACHE

    @property
    def spool_base(self) -> Path:
        """The folder whose ``restore-tmp/`` holds a restore's verified artifacts."""
        return self.spool_dir or self.state_dir

    @property
    def default_backup_target(self) -> str:
        folder = self.backup_dir or self.state_dir / names.BACKUPS
        return f"file://{folder.resolve()}"


_NAMES: dict[str, str] = {
    "RECONCILER_REPO": "repo",
    "RECONCILER_BRANCH": "branch",
    "RECONCILER_DIR": "directory",
    "RECONCILER_INTERVAL": "interval_s",
    "RECONCILER_STATE_DIR": "state_dir",
    "RECONCILER_PROJECT": "project",
    "RECONCILER_SSH_KEY": "ssh_key",
    "RECONCILER_KNOWN_HOSTS": "known_hosts",
    "RECONCILER_LOG_FORMAT": "log_format",
    "RECONCILER_BACKUP_DIR": "backup_dir",
    "RECONCILER_SPOOL_DIR": "spool_dir",
    "RECONCILER_NOTIFY_WEBHOOK_URL": "notify_webhook_url",
    "RECONCILER_NOTIFY_SLACK_URL": "notify_slack_url",
    "RECONCILER_COMMIT_STATUS_TOKEN": "commit_status_token",
    "RECONCILER_COMMIT_STATUS_PROVIDER": "commit_status_provider",
    "RECONCILER_COMMIT_STATUS_API": "commit_status_api",
    "RECONCILER_BACKUP_PING_URL": "backup_ping_url",
    "RECONCILER_METRICS_ADDR": "metrics_addr",
    "RECONCILER_WEBHOOK_SECRET": "webhook_secret",
    "RECONCILER_VERIFY": "verify",
    "RECONCILER_ENGINE": "engine",
    "RECONCILER_ALLOWED_SIGNERS": "allowed_signers",
    "RECONCILER_GPG_HOME": "gpg_home",
    "RECONCILER_AGE_KEY_FILE": "age_key_file",
}


def parse_listen_address(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port); None for ``off``.

    A bare port (``:9365``) is refused rather than read as every interface:
    exposing the endpoints beyond loopback must be written out (``0.0.0.0:9365``).
    """
    text = value.strip()
    if text.lower() == "off":
        return None
    usage = f"must be HOST:PORT (like {DEFAULT_METRICS_ADDR}), [IPv6]:PORT, or off; got {value!r}"
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(usage)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535; {usage}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address; {usage}") from None
        return host, port
    if ":" in host or not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or address; {usage}")
    return host, port


def _check_allowed_signers(path: Path) -> None:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(
            f"RECONCILER_VERIFY=ssh needs the allowed signers file {path} "
            f"(RECONCILER_ALLOWED_SIGNERS): {exc.strerror or exc}; install.sh --verify ssh "
            "--allowed-signers FILE puts it there"
        ) from exc
    if not any(line.strip() and not line.lstrip().startswith("#") for line in lines):
        raise ValueError(
            f"the allowed signers file {path} lists no key: every commit would be "
            "refused; add a line 'EMAIL namespaces=\"git\" ssh-ed25519 AAAA...' per signer"
        )


def _check_gpg_home(path: Path) -> None:
    if not any((path / name).is_file() for name in ("pubring.kbx", "pubring.gpg")):
        raise ValueError(
            f"RECONCILER_VERIFY=gpg needs a GnuPG home with the trusted public keys at "
            f"{path} (RECONCILER_GPG_HOME), and it has no pubring.kbx: install.sh --verify gpg "
            "--gpg-keys FILE makes it, or: gpg --homedir DIR --import KEYS.asc"
        )


def merged_environment(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], Path | None]:
    """The env file's variables overlaid by the real environment, and the file read."""
    real = dict(os.environ if environ is None else environ)
    named = real.get("RECONCILER_ENV_FILE")
    candidate = Path(named or DEFAULT_ENV_FILE)
    merged: dict[str, str] = {}
    env_file: Path | None = None
    if candidate.exists() and not candidate.is_dir():
        try:
            values = dotenv_values(candidate, interpolate=False)
        except OSError as exc:
            raise SettingsError(f"{candidate}: cannot read the env file: {exc}") from exc
        merged.update({k: v for k, v in values.items() if v is not None})
        env_file = candidate
    elif named:
        raise SettingsError(f"RECONCILER_ENV_FILE names {candidate}, which does not exist")
    merged.update(real)
    return merged, env_file


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment; ``overrides`` (from command-line flags) win."""
    merged, env_file = merged_environment(environ)
    values: dict[str, object] = {}
    for variable, field_name in _NAMES.items():
        if merged.get(variable, "") != "":
            values[field_name] = merged[variable]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("repo", os.getcwd())
    values["environ"] = merged
    values["env_file"] = env_file
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        reverse = {v: k for k, v in _NAMES.items()}
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a check across fields says itself what it is about
                problems.append(str(err["msg"]).removeprefix("Value error, "))
                continue
            field_name = str(err["loc"][0])
            problems.append(f"{reverse.get(field_name, field_name)}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
