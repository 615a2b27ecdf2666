"""``desired-state/backup.yaml``: what to back up, when, where to, how long to keep.

Loaded with the same line-keeping YAML reader as compose.yaml, filled from the
same environment (``${VAR}``), and checked against the loaded ``DesiredState``:
every volume must be a compose volume, every database a MariaDB service. Any
problem is an ``InvalidDesiredState`` whose issues read
``desired-state/backup.yaml:4: volumes[0]: unknown volume 'sitee' (did you mean 'site'?)``.
Pure: no Docker, no S3; the only I/O is reading the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reconciler.errors import InvalidDesiredState, Issue
from reconciler.model.desired import DesiredState, ServiceSpec
from reconciler.model.interpolation import interpolate
from reconciler.model.text_files import decode_text
from reconciler.model.yaml_lines import (
    LineMap,
    YamlError,
    load_yaml,
    pydantic_issues,
    unknown_name,
)

FILE_NAME = "backup.yaml"
_HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# S3's bucket naming rules (lower case, 3-63 characters, no leading/trailing dot or dash).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Variables in a service's environment that only a MariaDB (or MySQL) image reads.
_MARIADB_VARIABLES = (
    "MARIADB_ROOT_PASSWORD",
    "MARIADB_ROOT_PASSWORD_FILE",
    "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD",
    "MARIADB_RANDOM_ROOT_PASSWORD",
    "MYSQL_ROOT_PASSWORD",
    "MYSQL_ROOT_PASSWORD_FILE",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Schedule(_Frozen):
    every: Literal["day"] = "day"
    at: str = "05:04"
    timezone: str = "UTC"

    @field_validator("at")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        if not _HH_MM.match(value):
            raise ValueError(f"'{value}' is not a time of day: write HH:MM, e.g. \"05:04\"")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone '{value}': use an IANA name such as Europe/Bucharest or UTC"
            ) from exc
        return value

    @property
    def time_of_day(self) -> time:
        hours, minutes = self.at.split(":")
        return time(int(hours), int(minutes))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class VolumeBackup(_Frozen):
    name: str  # the compose volume key
    # Stop the services that mount the volume while it is archived (files
    # that change under tar, like SQLite, need it); started again afterwards.
    stop_services: bool = False


class DatabaseBackup(_Frozen):
    service: str  # a MariaDB service of compose.yaml


class Retention(_Frozen):
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=12, ge=0)


class RestoreDrill(_Frozen):
    """Reserved for the restore-drill issue: a periodic test restore of the newest backup."""

    every: Literal["day", "week", "month"] = "week"


class BackupPolicy(_Frozen):
    target: str
    schedule: Schedule = Schedule()
    volumes: tuple[VolumeBackup, ...] = ()
    databases: tuple[DatabaseBackup, ...] = ()
    retention: Retention = Retention()
    restore_drill: RestoreDrill | None = None

    @field_validator("target")
    @classmethod
    def _target_url(cls, value: str) -> str:
        problem = target_problem(value)
        if problem:
            raise ValueError(problem)
        return value.rstrip("/") if value.startswith("s3://") else value


def target_problem(url: str) -> str | None:
    """Why ``url`` is not a usable backup target, or None."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not _BUCKET.match(parsed.netloc) or ".." in parsed.netloc:
            return (
                f"'{url}' has no valid bucket name: write s3://BUCKET/PREFIX "
                "(bucket: 3-63 lower-case letters, digits, dots or dashes)"
            )
        return None
    if parsed.scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/"):
            return f"'{url}' is not an absolute file URL: write file:///var/backups/site"
        return None
    return f"'{url}' is not a backup target: use s3://BUCKET/PREFIX or file:///PATH"


def is_mariadb_service(service: ServiceSpec) -> bool:
    """A service whose image is MariaDB (or MySQL), or that sets variables only they read."""
    repository = service.image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0].lower()
    if "mariadb" in repository or "mysql" in repository:
        return True
    return any(name in service.environment for name in _MARIADB_VARIABLES)


def load_backup_policy(
    root: Path,
    *,
    directory: str,
    desired: DesiredState,
    environ: Mapping[str, str],
    default_target: str,
) -> BackupPolicy | None:
    """Read ``<root>/<directory>/backup.yaml``; None when the file is absent.

    ``default_target`` fills a missing ``target`` (a folder under the state dir).
    Raises ``InvalidDesiredState`` with every problem found, each with its line.
    """
    path = root / directory / FILE_NAME
    display = f"{directory}/{FILE_NAME}"
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidDesiredState([Issue(display, 0, "", f"cannot read: {exc}")]) from exc
    text = decode_text(data, path=display)
    return parse_backup_policy(
        text, path=display, desired=desired, environ=environ, default_target=default_target
    )


def parse_backup_policy(
    text: str,
    *,
    path: str,
    desired: DesiredState,
    environ: Mapping[str, str],
    default_target: str,
) -> BackupPolicy:
    """The policy in ``text`` (the contents of backup.yaml), checked against ``desired``."""
    try:
        data, line_map = load_yaml(text, path=path)
    except YamlError as exc:
        raise InvalidDesiredState([exc.issue]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidDesiredState([Issue(path, 1, "", "must be a mapping of keys to values")])
    data, issues = interpolate(data, environ, line_map=line_map)
    data = _normalise(data)
    data.setdefault("target", default_target)
    try:
        policy = BackupPolicy.model_validate(data)
    except ValidationError as exc:
        # A value whose ${VAR} failed is empty now: its follow-up errors would only confuse.
        failed = {issue.key for issue in issues}
        issues.extend(
            i for i in pydantic_issues(exc, line_map, model=BackupPolicy) if i.key not in failed
        )
        raise InvalidDesiredState(issues) from exc
    issues.extend(_check_references(policy, desired, line_map))
    if issues:
        raise InvalidDesiredState(issues)
    return policy


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """The short forms users write, made long: ``volumes: [site]`` -> ``[{name: site}]``."""
    out = dict(data)
    volumes = out.get("volumes")
    if isinstance(volumes, list):
        out["volumes"] = [{"name": item} if isinstance(item, str) else item for item in volumes]
    databases = out.get("databases")
    if isinstance(databases, list):
        out["databases"] = [
            {"service": item} if isinstance(item, str) else item for item in databases
        ]
    return out


def _check_references(
    policy: BackupPolicy, desired: DesiredState, line_map: LineMap
) -> list[Issue]:
    issues: list[Issue] = []
    seen_volumes: set[str] = set()
    for index, volume in enumerate(policy.volumes):
        where: tuple[str | int, ...] = ("volumes", index)
        if volume.name not in desired.volumes:
            issues.append(
                line_map.issue(
                    where,
                    unknown_name("volume", volume.name, desired.volumes, desired.compose_path),
                )
            )
        elif volume.name in seen_volumes:
            issues.append(line_map.issue(where, f"volume '{volume.name}' is listed twice"))
        seen_volumes.add(volume.name)
    seen_services: set[str] = set()
    for index, database in enumerate(policy.databases):
        where = ("databases", index, "service")
        service = desired.services.get(database.service)
        if service is None:
            issues.append(
                line_map.issue(
                    where,
                    unknown_name(
                        "service", database.service, desired.services, desired.compose_path
                    ),
                )
            )
        elif not is_mariadb_service(service):
            issues.append(
                line_map.issue(
                    where,
                    f"service '{database.service}' (image {service.image}) is not a MariaDB "
                    "service: databases are dumped with mariadb-dump; back up its volume instead",
                )
            )
        elif database.service in seen_services:
            issues.append(line_map.issue(where, f"service '{database.service}' is listed twice"))
        seen_services.add(database.service)
    return issues
