"""The shared ground of the Compose models: value parsers and the base model.

Compose writes many values in more than one way (a string or a list of
strings, ``KEY=VAL`` entries or a mapping, ``1m30s`` or ``90s``); the parsers
and annotated types here turn each into one form for the models of
compose_schema.py and its sibling modules. ``ComposeModel`` is their base: it
refuses unknown keys and drops ``x-*`` extension keys, as Compose does.
``ENGINE_MODE`` is the key of the validation context that chooses swarm mode.
No I/O here.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    model_validator,
)


def scalar_text(value: Any) -> str:
    """A YAML scalar as the string Compose would pass on (``true``, ``3``, ``1.5``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("must be a string, a number or a boolean")


def _entry_text(value: Any) -> str:
    """One value of a mapping form (``KEY: value``): a scalar, as Compose passes it on."""
    return scalar_text(value)


def _list_entry(what: str) -> Any:
    def check(item: Any) -> str:
        if not isinstance(item, str):
            raise ValueError(f"each {what} in a list must be a string KEY=VALUE")
        if not item.partition("=")[0]:
            raise ValueError(f"{what} entries need a name before '=' (KEY=VALUE)")
        return item

    return check


def entries_form(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return None  # neither: the discriminator's own error, worded below


def key_values(what: str, *, bare: Literal["none", "empty"]) -> Any:
    """``["K=V", "K"]`` or ``{K: V}`` -> ``{K: "V"}``; a bare ``K`` -> None or "".

    The two forms are a tagged union so that pydantic validates each entry in
    its own place: a bad entry is reported at its own line
    (``environment.NESTED``, ``environment[2]``), not at ``environment:``.
    """
    missing = None if bare == "none" else ""

    def to_mapping(value: list[str] | dict[str, str | None]) -> dict[str, Any]:
        if isinstance(value, dict):
            return {key: missing if val is None else val for key, val in value.items()}
        out: dict[str, Any] = {}
        for item in value:
            key, sep, val = item.partition("=")
            out[key] = val if sep else missing
        return out

    entry = Annotated[Any, AfterValidator(lambda v: None if v is None else _entry_text(v))]
    return Annotated[
        Annotated[list[Annotated[Any, AfterValidator(_list_entry(what))]], Tag("list")]
        | Annotated[dict[str, entry], Tag("dict")],
        Discriminator(
            entries_form,
            custom_error_type="key_values",
            custom_error_message=f"must be a list of KEY=VALUE strings or a mapping of {what}s",
        ),
        BeforeValidator(lambda value: {} if value is None else value),
        AfterValidator(to_mapping),
    ]


def string_list(value: Any) -> Any:
    """A single string where a list of strings is expected is a one-item list."""
    return [value] if isinstance(value, str) else value


def _command(value: Any) -> Any:
    """A command string is split like a shell would, as Compose does."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command like a shell would: {exc}") from None
    if isinstance(value, list):
        return [scalar_text(v) if not isinstance(v, list | dict) else v for v in value]
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: Any) -> float:
    """A Compose (Go) duration such as ``1m30s``, ``10s``, ``500ms`` or ``1h``, in seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a duration such as 1m30s, 10s or 500ms")
    text = str(value).strip()
    if text in {"0", "0.0"}:
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"invalid duration {text!r}: use a number with a unit (h, m, s, ms, us, ns), "
            "such as 1m30s, 10s or 500ms"
        )
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]
NonEmptyText = Annotated[str, Field(min_length=1)]
StringList = Annotated[list[str], BeforeValidator(string_list)]
Command = Annotated[list[str], BeforeValidator(_command)]
if TYPE_CHECKING:  # what the validated fields hold
    EnvMapping = dict[str, str | None]
    Labels = dict[str, str]
    Options = dict[str, str]
else:
    EnvMapping = key_values("variable", bare="none")
    Labels = key_values("label", bare="empty")
    # driver_opts values may be numbers in YAML; Docker wants strings.
    Options = key_values("option", bare="empty")


class ComposeModel(BaseModel):
    """Refuses unknown keys and drops ``x-*`` extension keys, as Compose does."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_extensions(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))
            }
        return data


# ``model_validate(..., context={ENGINE_MODE: "swarm"})`` validates for Swarm
# (model/swarm_schema.py); without it, for one Docker engine.
ENGINE_MODE = "engine_mode"
SWARM_DOCS = 'docs/operations.md, "Growing past one VM"'


def in_swarm_mode(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and info.context.get(ENGINE_MODE) == "swarm"


def require_mapping(data: Any, what: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"must be a mapping of {what}")
