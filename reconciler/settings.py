"""Run-time settings, read once from the environment and the env file.

Real environment variables win over the env file (``/etc/reconciler/reconciler.env``
or ``RECONCILER_ENV_FILE``), like Compose's ``.env``. The merged mapping is also
what ``${VAR}`` in compose.yaml is filled from, so secrets can live on the VM.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reconciler.errors import ReconcilerError

DEFAULT_ENV_FILE = "/etc/reconciler/reconciler.env"


class SettingsError(ReconcilerError):
    pass


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
    env_file: Path | None = None
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

    @property
    def checkouts_dir(self) -> Path:
        return self.state_dir / "git"

    @property
    def default_backup_target(self) -> str:
        folder = self.backup_dir or self.state_dir / "backups"
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
    "RECONCILER_AGE_KEY_FILE": "age_key_file",
}


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
            field_name = str(err["loc"][0]) if err["loc"] else ""
            problems.append(f"{reverse.get(field_name, field_name)}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
