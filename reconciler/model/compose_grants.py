"""Secrets and configs: where their content comes from, and how a service is granted them.

The top-level ``secrets`` and ``configs`` (``TopLevelSecret``,
``TopLevelConfig``) name the content's source: a file of the repository, an
environment variable, or (configs) inline text. A service's entries
(``ServiceFileGrant``) name one of them and the file it becomes in the
container (target, uid, gid, mode). No I/O here: model/loading.py reads the
content.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, model_validator

from reconciler.model.compose_values import ComposeModel, NonEmptyText
from reconciler.model.yaml_lines import LeadingZeroInt

# Keys of top-level secrets and configs that name a secret store (Swarm's, or a
# driver's): one Docker engine has none, so they are refused with that reason.
STORE_KEYS = frozenset({"external", "name", "driver", "driver_opts", "template_driver", "labels"})
STORE_REASON = (
    "a secret store is a Swarm feature and one Docker engine has none: declare where the "
    "content comes from instead (file: a path in the repository, environment: a variable{content})"
)


class TopLevelFile(ComposeModel):
    """One entry of the top-level ``secrets`` or ``configs``: where its content comes from."""

    file: NonEmptyText | None = None
    environment: NonEmptyText | None = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            choice = " or ".join(f"{key}:" for key in cls._sources())
            raise ValueError(f"must be a mapping with the content's source ({choice})")
        return data

    @model_validator(mode="after")
    def _one_source(self) -> TopLevelFile:
        given = [key for key in self._sources() if getattr(self, key) is not None]
        if len(given) != 1:
            choice = " or ".join(self._sources())
            raise ValueError(
                f"needs exactly one of {choice} (the content's source)"
                + (f", not {' and '.join(given)}" if given else "")
            )
        return self

    @classmethod
    def _sources(cls) -> tuple[str, ...]:
        return ("file", "environment")


class TopLevelSecret(TopLevelFile):
    pass


class TopLevelConfig(TopLevelFile):
    # Inline, after interpolation (Compose interpolates it like any value).
    content: str | None = None

    @classmethod
    def _sources(cls) -> tuple[str, ...]:
        return ("file", "environment", "content")


def _numeric_id(value: Any) -> int:
    """A uid or gid: Compose writes them as strings ("103"); a number is fine too."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a numeric id such as 1000 (the container's names are unknown)")
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(
            f"{text!r} is not a numeric id: write a number such as 1000 "
            "(user names are resolved in the image, which the reconciler does not read)"
        )
    return int(text)


def _file_mode(value: Any) -> int:
    """A file mode: an octal number (``0o440``, ``0440``) or string (``"0440"``), as in Compose."""
    if isinstance(value, LeadingZeroInt):
        # ``mode: 0440``: go-yaml (Docker Compose) reads a leading zero as octal.
        value = value.text
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('must be an octal file mode such as 0o440 or "0440"')
    mode: int = value if isinstance(value, int) else -1
    if isinstance(value, str):
        text = value.strip().removeprefix("0o")
        if not text or not all(c in "01234567" for c in text):
            raise ValueError(f'{value!r} is not an octal file mode: write e.g. 0o440 or "0440"')
        mode = int(text, 8)
    if not 0 <= mode <= 0o7777:
        shown = f"{value:#o}" if isinstance(value, int) else repr(value)
        raise ValueError(f"mode {shown} is out of range: write e.g. 0o440 or 0o444")
    return mode


def _container_file(value: Any) -> str:
    """A target: a file path in the container (absolute, or relative to the default folder)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a file path in the container, e.g. db_password or /etc/app.conf")
    parts = value.split("/")
    if "\0" in value or value.endswith("/") or any(p in {".", ".."} for p in parts):
        raise ValueError(
            f"{value!r} is not a valid file path: no '.' or '..' parts, no trailing '/'"
        )
    return value


def _grant_list(what: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError(
                f"must be a list of {what} names (- name) or of mappings (- source: name)"
            )
        return value

    return check


class ServiceFileGrant(ComposeModel):
    """One entry of a service's ``secrets`` or ``configs``; the short syntax is the source."""

    source: NonEmptyText
    target: Annotated[str, BeforeValidator(_container_file)] | None = None
    uid: Annotated[int, BeforeValidator(_numeric_id)] | None = None
    gid: Annotated[int, BeforeValidator(_numeric_id)] | None = None
    mode: Annotated[int, BeforeValidator(_file_mode)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_syntax(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"source": data}
        if not isinstance(data, dict):
            raise ValueError("must be a name (short syntax) or a mapping with source")
        return data


SecretGrants = Annotated[list[ServiceFileGrant], BeforeValidator(_grant_list("secret"))]
ConfigGrants = Annotated[list[ServiceFileGrant], BeforeValidator(_grant_list("config"))]
