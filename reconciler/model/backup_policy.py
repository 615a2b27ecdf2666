"""``desired-state/backup.yaml``: what to back up, when, where to, how long to keep.

Loaded with the same line-keeping YAML reader as compose.yaml, filled from the
same environment (``${VAR}``), and checked against the loaded ``DesiredState``:
every volume must be a compose volume, every database a MariaDB service. An
``external_databases`` entry names a MariaDB outside the stack (a database VM,
a managed service): its password is read from a variable of the environment,
never from backup.yaml, and its TLS CA file from the repository. Any
problem is an ``InvalidDesiredState`` whose issues read
``desired-state/backup.yaml:4: volumes[0]: unknown volume 'sitee' (did you mean 'site'?)``.
Pure: no Docker, no S3; the only I/O is reading the file (and a CA file it names).
"""

from __future__ import annotations

import ipaddress
import os
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

# A host name (RFC 1123 labels) or an IP address; no scheme, port, path or space.
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# Names that reach mariadb-dump's command line and restic's tags: never an option.
_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_$-]{0,63}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CA_FILE_MAX_BYTES = 256 * 1024


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


def host_problem(value: str) -> str | None:
    """Why ``value`` is not a host name or an IP address, or None."""
    hint = "write a host name (db.internal.example) or an IP address (10.0.0.5)"
    if not value or any(c.isspace() for c in value):
        return f"{value!r} is not a host: {hint}, without spaces"
    if "://" in value or "/" in value or "@" in value:
        return f"{value!r} is a URL, not a host: {hint}, and the port under port:"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if value.count(":") == 1:
        return f"{value!r} holds a port: {hint}, and the port under port:"
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return f"{value!r} is not a host name: {hint}"
    return None


class ExternalDatabase(_Frozen):
    """A MariaDB that is not a service of the stack, dumped through a short-lived helper.

    ``password`` and ``ca_pem`` are filled by the loader (from the variable
    ``password_from`` names and the file ``ca_file`` names), never written in
    backup.yaml; both stay out of ``repr``.
    """

    name: str  # the part's name in backups, and in restore.yaml's databases
    host: str
    port: int = Field(default=3306, ge=1, le=65535)
    user: str = Field(min_length=1, max_length=80)
    password_from: str
    databases: tuple[str, ...] = Field(min_length=1)
    tls: Literal["off", "required", "verify"] = "off"
    ca_file: str | None = None
    # The image of the helper (with mariadb-dump and mariadb), present on the
    # engine; None: the image of a MariaDB service of the stack.
    image: str | None = None
    # A network of compose.yaml the helper joins; None: the reconciler's own network.
    network: str | None = None
    # Services stopped while a restore loads its dump (they write to it).
    stop_services: tuple[str, ...] = ()
    password: str = Field(default="", repr=False, exclude=True)
    ca_pem: str = Field(default="", repr=False, exclude=True)

    @field_validator("tls", mode="before")
    @classmethod
    def _unquoted_off(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted ``tls: off`` as false: it means off.
        return "off" if value is False else value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _PART_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a plain name: letters, digits, '.', '_', '-' (e.g. shopdb)"
            )
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        problem = host_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if any(c.isspace() or not c.isprintable() for c in value) or value.startswith("-"):
            raise ValueError(f"{value!r} is not a user name: no spaces, not starting with '-'")
        return value

    @field_validator("password_from")
    @classmethod
    def _variable(cls, value: str) -> str:
        if not _VARIABLE.match(value):
            raise ValueError(
                f"{value!r} is not a variable name: write the name of a variable of the env "
                "file (DB_BACKUP_PASSWORD), not its value"
            )
        return value

    @field_validator("databases")
    @classmethod
    def _database_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _DATABASE_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a database name this reconciler dumps: letters, digits, "
                    "'_', '$', '-', not starting with '-'"
                )
        if len(set(value)) != len(value):
            raise ValueError("a database is listed twice")
        return value


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
    external_databases: tuple[ExternalDatabase, ...] = ()
    retention: Retention = Retention()
    restore_drill: RestoreDrill | None = None

    @field_validator("target")
    @classmethod
    def _target_url(cls, value: str) -> str:
        problem = target_problem(value)
        if problem:
            raise ValueError(problem)
        return value.rstrip("/") if value.startswith("s3://") else value

    def external(self, name: str) -> ExternalDatabase | None:
        return next((e for e in self.external_databases if e.name == name), None)


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
        text,
        path=display,
        desired=desired,
        environ=environ,
        default_target=default_target,
        repository=root,
        folder=root / directory,
    )


def parse_backup_policy(
    text: str,
    *,
    path: str,
    desired: DesiredState,
    environ: Mapping[str, str],
    default_target: str,
    repository: Path | None = None,
    folder: Path | None = None,
) -> BackupPolicy:
    """The policy in ``text`` (the contents of backup.yaml), checked against ``desired``.

    ``folder`` (inside ``repository``) is where a ``ca_file`` is looked up;
    without them a ``ca_file`` is an error.
    """
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
    issues.extend(_refuse_clear_passwords(data, line_map))
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
    externals, external_issues = _resolve_externals(
        policy, desired, line_map, environ=environ, repository=repository, folder=folder
    )
    issues.extend(external_issues)
    if issues:
        raise InvalidDesiredState(issues)
    return policy.model_copy(update={"external_databases": externals})


def _refuse_clear_passwords(data: dict[str, Any], line_map: LineMap) -> list[Issue]:
    """A password written in backup.yaml is refused (and dropped, so it is not echoed)."""
    issues: list[Issue] = []
    entries = data.get("external_databases")
    if not isinstance(entries, list):
        return issues
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        for key in ("password", "ca_pem"):
            if key in entry:
                entry.pop(key)
                what = (
                    "never write the password in backup.yaml (git keeps it): put it in the env "
                    "file (or an encrypted file, docs/secrets.md) and name its variable: "
                    "password_from: DB_BACKUP_PASSWORD"
                    if key == "password"
                    else "unknown key: name the CA file of the repository with ca_file: instead"
                )
                issues.append(line_map.issue(("external_databases", index, key), what))
    return issues


def _resolve_externals(
    policy: BackupPolicy,
    desired: DesiredState,
    line_map: LineMap,
    *,
    environ: Mapping[str, str],
    repository: Path | None,
    folder: Path | None,
) -> tuple[tuple[ExternalDatabase, ...], list[Issue]]:
    """Each external database checked against the stack, its password and CA filled in."""
    issues: list[Issue] = []
    resolved: list[ExternalDatabase] = []
    seen: set[str] = {d.service for d in policy.databases}
    has_mariadb = any(is_mariadb_service(s) for s in desired.services.values())
    for index, entry in enumerate(policy.external_databases):
        base: tuple[str | int, ...] = ("external_databases", index)

        def add(key: str | None, message: str, base: tuple[str | int, ...] = base) -> None:
            issues.append(line_map.issue((*base, key) if key else base, message))

        if entry.name in desired.services or entry.name in seen:
            add(
                "name",
                f"'{entry.name}' is already the name of a service or a database of this "
                "backup: a backup part has one name; choose another (e.g. "
                f"{entry.name}-external)",
            )
        seen.add(entry.name)
        password = environ.get(entry.password_from, "")
        if not password:
            add(
                "password_from",
                f"the variable {entry.password_from} is not set: put "
                f"{entry.password_from}=... in the env file (or an encrypted file, "
                "docs/secrets.md)",
            )
        if entry.image is None and not has_mariadb:
            add(
                None,
                "no MariaDB service in the stack lends its image to the dump helper: name an "
                "image with mariadb-dump that is on the engine (image: mariadb:11.4); it is "
                "never pulled",
            )
        if entry.network is not None and entry.network not in desired.networks:
            add(
                "network",
                unknown_name("network", entry.network, desired.networks, desired.compose_path),
            )
        for position, service in enumerate(entry.stop_services):
            if service not in desired.services:
                issues.append(
                    line_map.issue(
                        (*base, "stop_services", position),
                        unknown_name("service", service, desired.services, desired.compose_path),
                    )
                )
        ca_pem = ""
        if entry.tls == "verify" and entry.ca_file is None:
            add(
                "tls",
                "tls: verify checks the server's certificate against a CA: name its file of "
                "the repository (ca_file: certs/db-ca.pem), or write tls: required",
            )
        elif entry.ca_file is not None and entry.tls != "verify":
            add(
                "ca_file",
                f"a CA file is only used with tls: verify (this entry has tls: {entry.tls})",
            )
        elif entry.ca_file is not None:
            text, problem = _ca_file(entry.ca_file, repository=repository, folder=folder)
            if problem:
                add("ca_file", problem)
            ca_pem = text
        resolved.append(entry.model_copy(update={"password": password, "ca_pem": ca_pem}))
    return tuple(resolved), issues


def _ca_file(value: str, *, repository: Path | None, folder: Path | None) -> tuple[str, str | None]:
    """The CA file's text, read inside the repository; or why it cannot be used."""
    if repository is None or folder is None:
        return "", "a CA file is read from the repository, which is not known here"
    if os.path.isabs(value):
        return "", f"{value!r} must be a path relative to the desired-state folder"
    candidate = Path(os.path.normpath(folder / value))
    if not candidate.resolve().is_relative_to(repository.resolve()):
        return "", f"{value!r} leaves the repository: use a path inside it"
    in_repo = os.path.relpath(candidate, repository)
    if not candidate.is_file():
        return "", f"{value!r}: file {in_repo} does not exist in the commit"
    try:
        data = candidate.read_bytes()
    except OSError as exc:
        return "", f"{value!r}: cannot read {in_repo}: {exc.strerror}"
    if len(data) > CA_FILE_MAX_BYTES:
        return "", f"{value!r}: {in_repo} is over {CA_FILE_MAX_BYTES // 1024} KiB: not a CA file"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return "", f"{value!r}: {in_repo} is not a PEM file (not ASCII text)"
    if "-----BEGIN CERTIFICATE-----" not in text:
        return "", f"{value!r}: {in_repo} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    return text, None


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
