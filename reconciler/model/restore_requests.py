"""``desired-state/restore.yaml``: restore requests, each with an id that runs once per VM.

Read with the same line-keeping YAML reader as compose.yaml and backup.yaml,
filled from the same environment (``${VAR}``), and checked against the loaded
``DesiredState``: every volume must be a compose volume, every database a
MariaDB service, every source a backup target URL, every id unique. Problems
are issues like
``desired-state/restore.yaml:7: restores[1].volumes[0]: unknown volume 'sitee'``.

A broken restore.yaml fails the restore requests only: the pass applies the
rest of the commit and runs no request (see ``restore/restore_pass.py``).
Pure: no Docker, no S3; the only I/O is reading the file.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from reconciler.errors import InvalidDesiredState, Issue
from reconciler.model.backup_policy import is_mariadb_service, target_problem
from reconciler.model.desired import DesiredState
from reconciler.model.interpolation import interpolate
from reconciler.model.text_files import decode_text
from reconciler.model.yaml_lines import (
    LineMap,
    YamlError,
    load_yaml,
    pydantic_issues,
    unknown_name,
)

FILE_NAME = "restore.yaml"
LATEST = "latest"
# Ids become part of object keys (``pre-restore/<id>/``) and of file names:
# keep them to characters that are safe in both.
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# The backup ids the backup pipeline makes (UTC start time).
_BACKUP_ID = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z$")


def normal_restore_path(path: str) -> str:
    """``./uploads/2026/`` -> ``uploads/2026``: how a path is matched in a volume archive."""
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/")


def restore_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file or folder inside a volume, or None."""
    shown = path[:120]
    if not path or not normal_restore_path(path) or normal_restore_path(path) == ".":
        return (
            f"'{shown}': name a file or folder inside the volume "
            "(for the whole volume, leave 'paths' out)"
        )
    if path.startswith("/"):
        return f"'{shown}': a path inside the volume is relative (uploads/2026, not /uploads/2026)"
    if ".." in path.split("/") or "\0" in path or len(path) > 4096:
        return f"'{shown}': '..' and NUL are not allowed in a path inside the volume"
    return None


class RestoreRequest(BaseModel):
    """One request: which backup, from where, and optionally which parts of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    backup: str = LATEST  # "latest" or a backup id
    source: str | None = None  # a target URL; None: backup.yaml's target
    volumes: tuple[str, ...] | None = None  # compose volume keys; None: all in the backup
    databases: tuple[str, ...] | None = None  # MariaDB services; None: all in the backup
    # Files or folders of the one volume named in ``volumes``: only those are
    # brought back (each exactly), the rest of the volume is left as it is.
    paths: tuple[str, ...] | None = None

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not REQUEST_ID.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a usable id: 1-100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (e.g. 2026-11-27-shop-rollback)"
            )
        return value

    @field_validator("backup")
    @classmethod
    def _backup_ref(cls, value: str) -> str:
        if value != LATEST and not _BACKUP_ID.fullmatch(value):
            raise ValueError(
                f"'{value}' is neither 'latest' nor a backup id like 2026-11-27T05-04-00Z "
                "(see `reconciler backup list`)"
            )
        return value

    @field_validator("paths")
    @classmethod
    def _safe_paths(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("name at least one file or folder, or leave 'paths' out")
        normal = []
        for path in value:
            problem = restore_path_problem(path)
            if problem:
                raise ValueError(problem)
            normal.append(normal_restore_path(path))
        return tuple(dict.fromkeys(normal))

    @field_validator("source")
    @classmethod
    def _source_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = target_problem(value)
        if problem:
            raise ValueError(problem.replace("backup target", "backup source"))
        return value.rstrip("/") if value.startswith("s3://") else value


def load_restore_requests(
    root: Path,
    *,
    directory: str,
    desired: DesiredState,
    environ: Mapping[str, str],
    external_databases: Collection[str] = (),
) -> tuple[RestoreRequest, ...]:
    """The requests of ``<root>/<directory>/restore.yaml`` in file order; () when absent.

    ``external_databases``: the names of backup.yaml's databases outside the
    stack, which ``databases:`` may name beside the MariaDB services.

    Raises ``InvalidDesiredState`` with every problem found, each with its line.
    """
    path = root / directory / FILE_NAME
    display = f"{directory}/{FILE_NAME}"
    if not path.is_file():
        return ()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidDesiredState([Issue(display, 0, "", f"cannot read: {exc}")]) from exc
    text = decode_text(data, path=display)
    return parse_restore_requests(
        text,
        path=display,
        desired=desired,
        environ=environ,
        external_databases=external_databases,
    )


def parse_restore_requests(
    text: str,
    *,
    path: str,
    desired: DesiredState,
    environ: Mapping[str, str],
    external_databases: Collection[str] = (),
) -> tuple[RestoreRequest, ...]:
    """The requests in ``text`` (the contents of restore.yaml), checked against ``desired``."""
    try:
        data, line_map = load_yaml(text, path=path)
    except YamlError as exc:
        raise InvalidDesiredState([exc.issue]) from exc
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise InvalidDesiredState([Issue(path, 1, "", "must be a mapping with a 'restores' list")])
    data, issues = interpolate(data, environ, line_map=line_map)
    # YAML keys may be numbers or booleans (``0:``, ``yes:``): compare them as text.
    unknown = sorted(str(key) for key in data if key != "restores")
    for key in unknown:
        issues.append(line_map.issue((key,), "unknown key (supported: restores)"))
    items = data.get("restores")
    if items is None:
        items = []
    if not isinstance(items, list):
        issues.append(line_map.issue(("restores",), "must be a list of requests"))
        raise InvalidDesiredState(issues)
    # Each request on its own, so one bad request does not hide the others' problems.
    requests: list[RestoreRequest] = []
    for index, item in enumerate(items):
        try:
            requests.append(RestoreRequest.model_validate(item))
        except ValidationError as exc:
            issues.extend(
                pydantic_issues(exc, line_map, model=RestoreRequest, prefix=("restores", index))
            )
            requests.append(RestoreRequest.model_construct(id=_raw_id(item)))
    issues.extend(_check_requests(tuple(requests), desired, line_map, external_databases))
    if issues:
        raise InvalidDesiredState(issues)
    return tuple(requests)


def _raw_id(item: object) -> str:
    return str(item.get("id", "")) if isinstance(item, dict) else ""


def _check_requests(
    requests: tuple[RestoreRequest, ...],
    desired: DesiredState,
    line_map: LineMap,
    external_databases: Collection[str] = (),
) -> list[Issue]:
    issues: list[Issue] = []
    first_line: dict[str, int] = {}
    for index, request in enumerate(requests):
        base: tuple[str | int, ...] = ("restores", index)
        if not request.id:
            pass  # no usable id: already reported
        elif request.id in first_line:
            issues.append(
                line_map.issue(
                    (*base, "id"),
                    f"duplicate id '{request.id}' (first at line {first_line[request.id]}): "
                    "every request needs an id of its own",
                )
            )
        else:
            first_line[request.id] = line_map.line_of((*base, "id"))
        for position, volume in enumerate(request.volumes or ()):
            if volume not in desired.volumes:
                issues.append(
                    line_map.issue(
                        (*base, "volumes", position),
                        unknown_name("volume", volume, desired.volumes, desired.compose_path),
                    )
                )
        if request.paths is not None and len(request.volumes or ()) != 1:
            issues.append(
                line_map.issue(
                    (*base, "paths"),
                    "paths are files or folders of one volume: name that volume alone "
                    "(volumes: [uploads])",
                )
            )
        for position, service_name in enumerate(request.databases or ()):
            where = (*base, "databases", position)
            if service_name in external_databases:
                continue  # backup.yaml's external_databases
            service = desired.services.get(service_name)
            if service is None:
                known = [*desired.services, *external_databases]
                issues.append(
                    line_map.issue(
                        where,
                        unknown_name("database service", service_name, known, desired.compose_path),
                    )
                )
            elif not is_mariadb_service(service):
                issues.append(
                    line_map.issue(
                        where,
                        f"service '{service_name}' (image {service.image}) is not a MariaDB "
                        "service: only MariaDB dumps can be loaded; restore its volume instead",
                    )
                )
    return issues
