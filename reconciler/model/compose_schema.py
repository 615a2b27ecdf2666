"""The supported subset of the Compose Specification, as users write it.

These pydantic models validate ``compose.yaml`` after interpolation: both the
short syntaxes (``"8080:80"``, ``"data:/var/lib/mysql:ro"``, ``KEY=VAL``) and
the long ones are accepted, and short forms are normalised into long ones by
``before`` validators, so each mistake gets one clear message instead of one
per member of a union. Keys of the Compose Specification that the reconciler
does not implement are refused (never silently ignored); ``x-*`` extension
keys are ignored, as in Compose. No I/O here: ``model/loading.py`` checks what
needs the checkout (paths, files) and resolves names.

docs/compose-subset.md documents the subset for users; keep them in step.
"""

from __future__ import annotations

import ipaddress
import math
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

from reconciler.model.yaml_lines import KeyPath, LeadingZeroInt

# --- scalar helpers ---------------------------------------------------------


def _scalar_text(value: Any) -> str:
    """A YAML scalar as the string Compose would pass on (``true``, ``3``, ``1.5``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("must be a string, a number or a boolean")


def _entry_text(value: Any) -> str:
    """One value of a mapping form (``KEY: value``): a scalar, as Compose passes it on."""
    return _scalar_text(value)


def _list_entry(what: str) -> Any:
    def check(item: Any) -> str:
        if not isinstance(item, str):
            raise ValueError(f"each {what} in a list must be a string KEY=VALUE")
        if not item.partition("=")[0]:
            raise ValueError(f"{what} entries need a name before '=' (KEY=VALUE)")
        return item

    return check


def _entries_form(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return None  # neither: the discriminator's own error, worded below


def _key_values(what: str, *, bare: Literal["none", "empty"]) -> Any:
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
            _entries_form,
            custom_error_type="key_values",
            custom_error_message=f"must be a list of KEY=VALUE strings or a mapping of {what}s",
        ),
        BeforeValidator(lambda value: {} if value is None else value),
        AfterValidator(to_mapping),
    ]


def _string_list(value: Any) -> Any:
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
        return [_scalar_text(v) if not isinstance(v, list | dict) else v for v in value]
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
StringList = Annotated[list[str], BeforeValidator(_string_list)]
Command = Annotated[list[str], BeforeValidator(_command)]
if TYPE_CHECKING:  # what the validated fields hold
    EnvMapping = dict[str, str | None]
    Labels = dict[str, str]
    Options = dict[str, str]
else:
    EnvMapping = _key_values("variable", bare="none")
    Labels = _key_values("label", bare="empty")
    # driver_opts values may be numbers in YAML; Docker wants strings.
    Options = _key_values("option", bare="empty")


class _Model(BaseModel):
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


def _require_mapping(data: Any, what: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"must be a mapping of {what}")


# --- ports ------------------------------------------------------------------

PORT_HELP = "[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL], e.g. 8080:80 or 127.0.0.1:8080:80/udp"


def _port_range(value: Any) -> tuple[int, int]:
    """``80`` or ``"8000-8002"`` -> (first, last), checked to be within 1-65535."""
    if isinstance(value, bool):
        raise ValueError("must be a port number 1-65535 or a range such as 8000-8002")
    text = str(value).strip() if isinstance(value, int | str) else ""
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if match is None:
        raise ValueError(f"{text!r} is not a port number or a range such as 8000-8002")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    for port in (first, last):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range (1-65535)")
    if last < first:
        raise ValueError(f"port range {text} ends before it starts")
    return first, last


PortRange = Annotated[tuple[int, int], BeforeValidator(_port_range)]


def _parse_short_port(text: str) -> dict[str, Any]:
    spec, _, protocol = text.partition("/")
    host_ip = ""
    if spec.startswith("["):
        # [::1]:8080:80: an IPv6 address, in brackets as in Compose.
        close = spec.find("]")
        if close < 0 or spec[close + 1 : close + 2] != ":":
            raise ValueError(f"malformed port {text!r}: expected {PORT_HELP}")
        host_ip = spec[1:close]
        rest = spec[close + 2 :].split(":")
        if len(rest) != 2:
            raise ValueError(f"malformed port {text!r}: expected {PORT_HELP}")
        published, target = rest
    else:
        parts = spec.split(":")
        if len(parts) == 1:
            published, target = "", parts[0]
        elif len(parts) == 2:
            published, target = parts
        elif len(parts) == 3:
            host_ip, published, target = parts
        else:
            raise ValueError(f"malformed port {text!r}: expected {PORT_HELP}")
    out: dict[str, Any] = {"target": target, "host_ip": host_ip}
    if published:
        out["published"] = published
    if protocol:
        out["protocol"] = protocol
    return out


def _ip_address(value: str) -> str:
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"host_ip {value!r} is not an IP address") from None
    return value


def _port_mode(value: str, info: ValidationInfo) -> str:
    if value == "ingress" and not in_swarm_mode(info):
        # Swarm's routing mesh: not something one engine can do.
        raise ValueError(
            f"mode ingress is Swarm's routing mesh: it applies in swarm mode ({SWARM_DOCS}); "
            "on one engine write mode: host or leave mode out"
        )
    return value


class Port(_Model):
    """One entry of ``ports``; the short syntax is parsed into this long form."""

    target: PortRange
    published: PortRange | None = None
    host_ip: Annotated[str, AfterValidator(_ip_address)] = ""
    protocol: Literal["tcp", "udp"] = "tcp"
    # None: the engine's default (host on one engine, ingress in swarm mode).
    mode: Annotated[Literal["host", "ingress"], AfterValidator(_port_mode)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_syntax(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError(f"malformed port: expected {PORT_HELP}")
        if isinstance(data, int):
            return {"target": data}
        if isinstance(data, str):
            return _parse_short_port(data.strip())
        if not isinstance(data, dict):
            raise ValueError(f"must be a string {PORT_HELP}, or a mapping with target")
        return data

    @model_validator(mode="after")
    def _ranges_match(self) -> Port:
        size = self.target[1] - self.target[0]
        if self.published is not None and self.published[1] - self.published[0] != size:
            raise ValueError(
                "the host port range and the container port range must have the same size "
                "(the reconciler does not pick a host port out of a range)"
            )
        return self

    def expanded(self) -> list[tuple[int | None, int]]:
        """(published, target) for every port of a range, in order."""
        first_target, last_target = self.target
        return [
            (None if self.published is None else self.published[0] + i, first_target + i)
            for i in range(last_target - first_target + 1)
        ]


# --- volumes ----------------------------------------------------------------


def _is_host_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


class ServiceVolume(_Model):
    """One entry of a service's ``volumes``; the short syntax is parsed into this long form.

    A volume without a source (``- /app/node_modules``, or ``type: volume``
    with no ``source``) is anonymous: Docker creates it for the container, and
    a recreate hands it on to the new container (``ServiceSpec.anonymous_volumes``).
    """

    type: Literal["volume", "bind"]
    source: str | None = None
    target: str
    read_only: bool = False

    @model_validator(mode="before")
    @classmethod
    def _short_syntax(cls, data: Any) -> Any:
        if isinstance(data, str):
            parts = data.split(":")
            if len(parts) == 1:
                # ``/app/node_modules``: an anonymous volume, as in Compose.
                return {"type": "volume", "target": parts[0]}
            if len(parts) > 3 or not parts[0] or not parts[1]:
                raise ValueError(
                    f"malformed volume {data!r}: expected SOURCE:TARGET[:ro|rw], "
                    "e.g. data:/var/lib/mysql or ./site:/var/www/html:ro"
                )
            mode = parts[2] if len(parts) == 3 else "rw"
            if mode not in {"ro", "rw"}:
                raise ValueError(
                    f"unsupported volume option {mode!r}: the reconciler supports ro and rw"
                )
            return {
                "type": "bind" if _is_host_path(parts[0]) else "volume",
                "source": parts[0],
                "target": parts[1],
                "read_only": mode == "ro",
            }
        if not isinstance(data, dict):
            raise ValueError(
                "must be a string SOURCE:TARGET[:ro] or a mapping with type and target"
            )
        return data

    @property
    def anonymous(self) -> bool:
        return self.type == "volume" and not self.source

    @model_validator(mode="after")
    def _checked(self) -> ServiceVolume:
        if not self.target.startswith("/"):
            raise ValueError(f"target {self.target!r} must be an absolute path in the container")
        if not self.source:
            if self.type == "volume":
                return self  # anonymous
            raise ValueError("a bind mount needs a source path")
        if self.source.startswith("~"):
            raise ValueError(
                f"source {self.source!r}: '~' has no meaning for the reconciler; "
                "use a path relative to compose.yaml or an absolute path"
            )
        if self.type == "volume" and _is_host_path(self.source):
            raise ValueError(
                f"source {self.source!r} is a path: use type: bind for a host path, "
                "or a volume name for type: volume"
            )
        return self


# --- networks, dependencies, health -------------------------------------------


class ServiceNetworkOptions(_Model):
    aliases: StringList = []


def _network_list(value: Any) -> Any:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ValueError("a list of networks must hold network names")
        return dict.fromkeys(value)
    return value


class DependsOn(_Model):
    condition: Literal["service_started", "service_healthy", "service_completed_successfully"] = (
        "service_started"
    )
    # Accepted for compatibility with Compose files; see docs/compose-subset.md.
    restart: bool = False
    # False: a dependency that is not deployed (e.g. its profile is inactive) is skipped.
    required: bool = True

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if data is None:
            return {}
        _require_mapping(data, "options such as condition: service_healthy")
        return data


def _depends_list(value: Any) -> Any:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ValueError("a list of dependencies must hold service names")
        return {name: {} for name in value}
    return value


def _health_test(value: Any) -> Any:
    if isinstance(value, str):
        return ["CMD-SHELL", value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(
            'must be a string (run by the shell) or a list: ["CMD", "prog", "arg"], '
            '["CMD-SHELL", "command"] or ["NONE"]'
        )
    kind = value[0]
    if kind == "NONE":
        if len(value) != 1:
            raise ValueError('["NONE"] takes no arguments')
    elif kind in {"CMD", "CMD-SHELL"}:
        if len(value) < 2:
            raise ValueError(f'["{kind}", ...] needs a command after "{kind}"')
    else:
        raise ValueError(
            f'the first item must be "CMD", "CMD-SHELL" or "NONE", not {kind!r} '
            '(for a shell command write ["CMD-SHELL", "..."] or a plain string)'
        )
    return value


class HealthCheck(_Model):
    test: Annotated[list[str], BeforeValidator(_health_test)] | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    retries: int | None = Field(default=None, ge=0)
    start_period: Duration | None = None
    # Accepted (Docker 25+); the desired state has no field for it yet.
    start_interval: Duration | None = None
    disable: bool = False

    @model_validator(mode="after")
    def _test_or_disable(self) -> HealthCheck:
        if self.disable:
            if self.test is not None and self.test != ["NONE"]:
                raise ValueError("set either test or disable: true, not both")
        elif self.test is None:
            raise ValueError(
                "test is required (the reconciler does not inherit the image's own test; "
                "to turn that off write disable: true)"
            )
        return self


# --- build, env files ---------------------------------------------------------


class Build(_Model):
    context: str = "."
    dockerfile: str = "Dockerfile"
    args: EnvMapping = {}
    target: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_syntax(cls, data: Any) -> Any:
        return {"context": data} if isinstance(data, str) else data


class EnvFile(_Model):
    path: str
    required: bool = True

    @model_validator(mode="before")
    @classmethod
    def _short_syntax(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data


def _env_file_list(value: Any) -> Any:
    return [value] if isinstance(value, str | dict) else value


_RESTART = re.compile(r"no|always|unless-stopped|on-failure(?::\d+)?")


def _restart(value: Any) -> Any:
    if value is False:  # ``restart: no`` read as YAML 1.1 boolean
        return "no"
    if not isinstance(value, str) or not _RESTART.fullmatch(value):
        raise ValueError(
            f"invalid restart policy {value!r}: use no, always, on-failure, on-failure:N "
            "or unless-stopped"
        )
    return value


def _pull_policy(value: Any) -> Any:
    # "if_not_present" is Compose's older spelling of "missing".
    return "missing" if value == "if_not_present" else value


# --- secrets and configs --------------------------------------------------------

# Keys of top-level secrets and configs that name a secret store (Swarm's, or a
# driver's): one Docker engine has none, so they are refused with that reason.
STORE_KEYS = frozenset({"external", "name", "driver", "driver_opts", "template_driver", "labels"})
STORE_REASON = (
    "a secret store is a Swarm feature and one Docker engine has none: declare where the "
    "content comes from instead (file: a path in the repository, environment: a variable{content})"
)


class TopLevelFile(_Model):
    """One entry of the top-level ``secrets`` or ``configs``: where its content comes from."""

    file: NonEmpty | None = None
    environment: NonEmpty | None = None

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


# --- runtime keys: sizes, limits, kernel and host settings ---------------------

_BYTE_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
BYTE_SIZE_HELP = "a number of bytes or a size with a unit (b, k, m, g), such as 64m or 1gb"


def parse_byte_size(value: Any) -> int:
    """A Compose byte size (``64m``, ``1gb``, ``512k``, ``2048``) in bytes.

    Compose's units (Docker's ``RAMInBytes``): powers of 1024, case-insensitive,
    an optional ``b`` or ``ib`` after the unit; a bare number is bytes.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be {BYTE_SIZE_HELP}")
    if isinstance(value, int | float):
        if value < 0 or value != int(value):
            raise ValueError(f"must be {BYTE_SIZE_HELP}")
        return int(value)
    match = _BYTE_SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"invalid size {value!r}: use {BYTE_SIZE_HELP}")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * _BYTE_UNITS[unit])


def _cpus(value: Any) -> float:
    """``cpus: 0.5`` or ``"1.5"``: a positive number of CPUs."""
    if isinstance(value, bool):
        raise ValueError("must be a number of CPUs, such as 0.5 or 2")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number of CPUs, such as 0.5 or 2") from None
    if not number > 0 or math.isinf(number):
        raise ValueError("must be a number of CPUs above 0, such as 0.5 or 2")
    return number


def _pids(value: Any) -> int:
    """A process limit: a positive count, or -1 (or 0) for none, as Docker reads it."""
    if isinstance(value, bool):
        raise ValueError("must be a number of processes, or -1 for no limit")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError("must be a number of processes, or -1 for no limit") from None
    if number < -1:
        raise ValueError("must be a number of processes, or -1 for no limit")
    return number


ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
Cpus = Annotated[float, BeforeValidator(_cpus)]
PidsLimit = Annotated[int, BeforeValidator(_pids)]


def _expose(value: Any) -> tuple[int, int, str]:
    """``3000``, ``"3000-3005"``, ``"8000/udp"`` -> (first, last, protocol)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a port such as 3000, 8000/udp or a range 3000-3005")
    spec, _, protocol = str(value).strip().partition("/")
    protocol = protocol or "tcp"
    if protocol not in {"tcp", "udp", "sctp"}:
        raise ValueError(f"protocol {protocol!r}: use tcp, udp or sctp")
    first, last = _port_range(spec)
    return first, last, protocol


_SIGNAL = re.compile(r"(?:SIG)?[A-Z][A-Z0-9+-]*|\d+")


def _signal(value: Any) -> str:
    text = _scalar_text(value).strip()
    if not _SIGNAL.fullmatch(text):
        raise ValueError(f"invalid signal {text!r}: use a name such as SIGTERM or SIGQUIT")
    return text


_CAPABILITY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _capability(value: Any) -> str:
    if not isinstance(value, str) or not _CAPABILITY.fullmatch(value):
        raise ValueError(f"invalid capability {value!r}: use a name such as NET_ADMIN or ALL")
    return value


def _tmpfs(value: Any) -> str:
    """``/run`` or ``/run:size=64m,mode=1777``: a container path, then Docker's options."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(
            "must be an absolute path in the container, optionally with options "
            "(/run or /run:size=64m)"
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


class ServiceFileGrant(_Model):
    """One entry of a service's ``secrets`` or ``configs``; the short syntax is the source."""

    source: NonEmpty
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


def _host_entry(value: Any) -> tuple[str, str]:
    """``host:ip`` or ``host=ip`` -> (host, ip), as Compose writes extra hosts."""
    if not isinstance(value, str):
        raise ValueError("must be a string HOST:IP (or HOST=IP), e.g. db.local:10.0.0.5")
    host, sep, ip = value.partition("=") if "=" in value else value.partition(":")
    if not sep or not host:
        raise ValueError(f"malformed extra host {value!r}: write HOST:IP or HOST=IP")
    return host, _host_ip(ip)


def _host_ip(value: Any) -> str:
    text = _scalar_text(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]  # [::1]: an IPv6 address in brackets, as Compose allows
    if text == "host-gateway":  # Docker's name for the host's address
        return text
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (or host-gateway)") from None
    return text


def _host_ips(value: Any) -> list[str]:
    return [_host_ip(v) for v in value] if isinstance(value, list) else [_host_ip(value)]


def _hosts_list(value: list[tuple[str, str]] | dict[str, list[str]]) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [(host, ip) for host, ips in value.items() for ip in ips]
    return value


if TYPE_CHECKING:
    ExtraHosts = list[tuple[str, str]]
    Sysctls = dict[str, str]
else:
    ExtraHosts = Annotated[
        Annotated[list[Annotated[Any, AfterValidator(_host_entry)]], Tag("list")]
        | Annotated[dict[str, Annotated[Any, AfterValidator(_host_ips)]], Tag("dict")],
        Discriminator(
            _entries_form,
            custom_error_type="extra_hosts",
            custom_error_message="must be a list of HOST:IP strings or a mapping HOST: IP",
        ),
        BeforeValidator(lambda value: {} if value is None else value),
        AfterValidator(_hosts_list),
    ]
    Sysctls = _key_values("sysctl", bare="empty")


class Ulimit(_Model):
    """``nofile: 1024`` (soft and hard) or ``nofile: {soft: 1024, hard: 2048}``."""

    soft: int = Field(ge=-1)
    hard: int = Field(ge=-1)

    @model_validator(mode="before")
    @classmethod
    def _short_syntax(cls, data: Any) -> Any:
        if isinstance(data, int | str) and not isinstance(data, bool):
            return {"soft": data, "hard": data}
        if not isinstance(data, dict):
            raise ValueError("must be a number, or a mapping with soft and hard")
        return data

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Ulimit:
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise ValueError(f"soft limit {self.soft} is above the hard limit {self.hard}")
        return self


# Docker's names of process limits (setrlimit), as ``docker run --ulimit`` takes them.
ULIMIT_NAMES = frozenset(
    [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ]
)


class Logging(_Model):
    """Docker's log driver and its options (``max-size: 10m``, ``max-file: "3"``)."""

    driver: NonEmptyText | None = None
    options: Options = {}


class Limits(_Model):
    cpus: Cpus | None = None
    memory: ByteSize | None = None
    pids: PidsLimit | None = None


class Reservations(_Model):
    memory: ByteSize | None = None


class Resources(_Model):
    limits: Limits | None = None
    reservations: Reservations | None = None


def _swarm_only(value: Any, info: ValidationInfo) -> Any:
    """Swarm's keys of ``deploy``: refused on one engine, typed by swarm_schema in swarm mode."""
    if not in_swarm_mode(info):
        raise ValueError(f"{DEPLOY_REASON}; {info.field_name} applies in swarm mode ({SWARM_DOCS})")
    return value


SwarmKey = Annotated[Any, AfterValidator(_swarm_only)]


class Deploy(_Model):
    """``resources`` for one engine; the rest of ``deploy`` is Swarm's (replicas, placement,
    ...): model/swarm_schema.py reads it in swarm mode, and one engine refuses it."""

    resources: Resources | None = None
    mode: SwarmKey = None
    replicas: SwarmKey = None
    placement: SwarmKey = None
    update_config: SwarmKey = None
    rollback_config: SwarmKey = None
    restart_policy: SwarmKey = None
    endpoint_mode: SwarmKey = None
    labels: SwarmKey = None


NETWORK_MODE_HELP = "use host, none or service:NAME (NAME a service of this file)"


def _network_mode(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string: {NETWORK_MODE_HELP}")
    kind, sep, target = value.partition(":")
    if value in {"host", "none"} or (kind == "service" and sep and target):
        return value
    if kind == "container":
        raise ValueError(
            "container:NAME joins a container the desired state does not declare, so the "
            "reconciler cannot order or recreate it with its container: use service:NAME "
            "with a service of this file"
        )
    if value in {"bridge", "default"}:
        raise ValueError(
            f"network_mode {value!r}: leave network_mode out; services join the project's "
            "network <project>_default, or the networks under networks:"
        )
    raise ValueError(
        f"network_mode {value!r}: to join a network, list it under networks:; "
        f"otherwise {NETWORK_MODE_HELP}"
    )


# Docker's rule for container names: at least two characters.
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def _container_name(value: Any) -> str:
    if not isinstance(value, str) or not CONTAINER_NAME.fullmatch(value):
        raise ValueError(
            f"invalid container name {value!r}: use letters, digits, '.', '-' and '_', "
            "starting with a letter or a digit (at least two characters)"
        )
    return value


# --- services and the file ----------------------------------------------------


NonEmpty = Annotated[str, Field(min_length=1)]


class Service(_Model):
    image: NonEmpty | None = None
    build: Build | None = None
    pull_policy: Annotated[
        Literal["missing", "always", "never", "build"], BeforeValidator(_pull_policy)
    ] = "missing"
    command: Command | None = None
    entrypoint: Command | None = None
    environment: EnvMapping = {}
    env_file: Annotated[list[EnvFile], BeforeValidator(_env_file_list)] = []
    ports: list[Port] = []
    volumes: list[ServiceVolume] = []
    networks: (
        Annotated[dict[str, ServiceNetworkOptions | None], BeforeValidator(_network_list)] | None
    ) = None
    depends_on: Annotated[dict[str, DependsOn], BeforeValidator(_depends_list)] = {}
    healthcheck: HealthCheck | None = None
    restart: Annotated[str, BeforeValidator(_restart)] = "no"
    labels: Labels = {}
    user: Annotated[str, BeforeValidator(_scalar_text)] | None = None
    working_dir: str | None = None
    hostname: str | None = None
    profiles: StringList = []
    stop_grace_period: Duration | None = None
    secrets: Annotated[list[ServiceFileGrant], BeforeValidator(_grant_list("secret"))] = []
    configs: Annotated[list[ServiceFileGrant], BeforeValidator(_grant_list("config"))] = []
    expose: list[Annotated[tuple[int, int, str], BeforeValidator(_expose)]] = []
    stop_signal: Annotated[str, BeforeValidator(_signal)] | None = None
    cap_add: list[Annotated[str, BeforeValidator(_capability)]] = []
    cap_drop: list[Annotated[str, BeforeValidator(_capability)]] = []
    init: bool | None = None
    tmpfs: Annotated[
        list[Annotated[str, BeforeValidator(_tmpfs)]], BeforeValidator(_string_list)
    ] = []
    shm_size: ByteSize | None = None
    extra_hosts: ExtraHosts = []
    read_only: bool = False
    security_opt: list[NonEmptyText] = []
    ulimits: dict[str, Ulimit] = {}
    sysctls: Sysctls = {}
    logging: Logging | None = None
    mem_limit: ByteSize | None = None
    mem_reservation: ByteSize | None = None
    cpus: Cpus | None = None
    pids_limit: PidsLimit | None = None
    deploy: Deploy | None = None
    stdin_open: bool = False
    tty: bool = False
    network_mode: Annotated[str, BeforeValidator(_network_mode)] | None = None
    container_name: Annotated[str, BeforeValidator(_container_name)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        _require_mapping(data, "service keys such as image, ports and volumes")
        return data


class Volume(_Model):
    name: str | None = None
    external: bool = False
    driver: str | None = None
    driver_opts: Options = {}
    labels: Labels = {}

    @model_validator(mode="after")
    def _external_alone(self) -> Volume:
        if self.external and (self.driver or self.driver_opts or self.labels):
            raise ValueError("an external volume exists already: drop driver, driver_opts, labels")
        return self


def _attachable(value: bool, info: ValidationInfo) -> bool:
    if not in_swarm_mode(info):
        raise ValueError(
            f"unsupported key: attachable is for Swarm's overlay networks ({SWARM_DOCS}); "
            "on one engine any container may join a bridge network, so drop it"
        )
    if not value:
        raise ValueError(
            "the reconciler's helpers (backups, restores) join the stack's networks, so they "
            "are attachable: leave attachable out, or write true"
        )
    return value


class Network(_Model):
    name: str | None = None
    external: bool = False
    driver: str | None = None
    internal: bool = False
    labels: Labels = {}
    # Swarm mode: overlay networks are always attachable (model/swarm_checks.py).
    attachable: Annotated[bool, AfterValidator(_attachable)] | None = None

    @model_validator(mode="after")
    def _external_alone(self) -> Network:
        if self.external and (self.driver or self.labels or self.internal):
            raise ValueError("an external network exists already: drop driver, internal, labels")
        return self


def _section(what: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            singular = what[:-1]
            raise ValueError(f"must be a mapping of {singular} names to {what} (name: ...)")
        return value

    return check


class ComposeFile(_Model):
    name: str | None = None
    # Obsolete in the Compose Specification; Compose accepts and ignores it.
    version: Any = None
    services: Annotated[dict[str, Service], BeforeValidator(_section("services"))]
    volumes: Annotated[dict[str, Volume | None], BeforeValidator(_section("volumes"))] = {}
    networks: Annotated[dict[str, Network | None], BeforeValidator(_section("networks"))] = {}
    secrets: Annotated[dict[str, TopLevelSecret], BeforeValidator(_section("secrets"))] = {}
    configs: Annotated[dict[str, TopLevelConfig], BeforeValidator(_section("configs"))] = {}

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        _require_mapping(data, "top-level keys such as services, volumes and networks")
        # An empty section (``volumes:`` with nothing under it) means none.
        return {k: ({} if v is None and k in _SECTIONS else v) for k, v in data.items()}


_SECTIONS = {"services", "volumes", "networks", "secrets", "configs"}

# Keys of the Compose Specification the reconciler does not implement: they
# are refused with "unsupported key" rather than "unknown key", so a user knows
# the key is right but the feature is missing.
UNSUPPORTED_TOP_LEVEL = frozenset({"include", "models"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


UNSUPPORTED_SERVICE = _words(
    """annotations attach blkio_config cgroup cgroup_parent cpu_count cpu_percent
    cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares cpuset credential_spec
    develop device_cgroup_rules devices dns dns_opt dns_search domainname driver_opts extends
    external_links gpus group_add ipc isolation label_file links mac_address mem_swappiness
    memswap_limit models oom_kill_disable oom_score_adj pid platform post_start pre_stop
    privileged provider runtime scale storage_opt use_api_socket userns_mode uts
    volumes_from"""
)
DEPLOY_REASON = (
    "unsupported key: the reconciler runs one container per service on one VM, so of "
    "deploy only resources (limits: memory, cpus, pids; reservations: memory) applies"
)
UNSUPPORTED_RESOURCES = frozenset({"devices", "generic_resources", "cpus"})
RESOURCES_REASON = (
    "unsupported key: on one engine the reconciler applies limits (memory, cpus, pids) "
    "and reservations.memory only"
)
UNSUPPORTED_BUILD = _words(
    """additional_contexts cache_from cache_to dockerfile_inline entitlements extra_hosts
    isolation labels network no_cache platforms privileged pull secrets shm_size ssh tags
    ulimits"""
)
UNSUPPORTED_VOLUME_LONG = frozenset({"bind", "volume", "tmpfs", "image", "consistency"})
UNSUPPORTED_PORT_LONG = frozenset({"name", "app_protocol"})
UNSUPPORTED_NETWORK = frozenset({"driver_opts", "enable_ipv4", "enable_ipv6", "ipam"})
UNSUPPORTED_SERVICE_NETWORK = frozenset(
    {"ipv4_address", "ipv6_address", "link_local_ips", "mac_address", "driver_opts", "priority"}
)
UNSUPPORTED_DEPENDS = frozenset[str]()
# Why, and what to write instead, where "unsupported" alone leaves a user stuck.
WHY_UNSUPPORTED = {
    "ipam": "the reconciler leaves subnets to Docker; drop ipam and reach services by name",
    "ipv4_address": "fixed addresses need a subnet the reconciler does not manage (ipam); "
    "reach the service by its name, which Docker's DNS resolves on the network",
    "ipv6_address": "fixed addresses need a subnet the reconciler does not manage (ipam); "
    "reach the service by its name, which Docker's DNS resolves on the network",
}


def explain_extra(loc: KeyPath, known: list[str]) -> str | None:
    """Message for a refused key that is valid Compose but not supported here.

    ``loc`` is the key's location relative to the top of compose.yaml, as
    pydantic reports it. Used as ``pydantic_issues(..., explain_extra=...)``.
    """
    if not loc:
        return None
    key = str(loc[-1])
    parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
    unsupported: frozenset[str] = frozenset()
    if parent == ():
        unsupported = UNSUPPORTED_TOP_LEVEL
    elif parent[:1] == ("services",):
        rest = parent[2:]
        if rest == ():
            unsupported = UNSUPPORTED_SERVICE
        elif rest == ("build",):
            unsupported = UNSUPPORTED_BUILD
        elif rest == ("volumes",):
            unsupported = UNSUPPORTED_VOLUME_LONG
        elif rest == ("ports",):
            unsupported = UNSUPPORTED_PORT_LONG
        elif rest[:1] == ("networks",):
            unsupported = UNSUPPORTED_SERVICE_NETWORK
        elif (
            rest[:2] == ("deploy", "resources")
            and len(rest) == 3
            and key in (UNSUPPORTED_RESOURCES)
        ):
            return RESOURCES_REASON
    elif parent[:1] == ("networks",):
        unsupported = UNSUPPORTED_NETWORK
        known = [k for k in known if k != "attachable"]  # Swarm's only
    elif parent[:1] in {("secrets",), ("configs",)} and len(parent) == 2 and key in STORE_KEYS:
        content = ", content: inline text" if parent[0] == "configs" else ""
        return f"unsupported key: {STORE_REASON.format(content=content)}"
    if key in unsupported:
        why = f": {WHY_UNSUPPORTED[key]}" if key in WHY_UNSUPPORTED else ""
        return f"unsupported key{why} (the reconciler supports: {', '.join(sorted(known))})"
    return None
