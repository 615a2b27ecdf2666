"""How a service's container runs: sizes, limits, kernel and host settings.

The keys Docker applies to a container as it creates it: memory, CPU and
process limits (``mem_limit``, ``cpus``, ``pids_limit``, ``deploy.resources``),
``ulimits``, ``sysctls``, ``extra_hosts``, ``logging``, ``stop_signal``,
``cap_add``, ``network_mode`` and ``container_name``. Of ``deploy`` one engine
takes ``resources`` only; the rest is Swarm's (``SwarmKey``), which
model/swarm_schema.py types in swarm mode. No I/O here.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    model_validator,
)

from reconciler.model.compose_values import (
    SWARM_DOCS,
    ComposeModel,
    NonEmptyText,
    Options,
    entries_form,
    in_swarm_mode,
    key_values,
    scalar_text,
)

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


_SIGNAL = re.compile(r"(?:SIG)?[A-Z][A-Z0-9+-]*|\d+")


def _signal(value: Any) -> str:
    text = scalar_text(value).strip()
    if not _SIGNAL.fullmatch(text):
        raise ValueError(f"invalid signal {text!r}: use a name such as SIGTERM or SIGQUIT")
    return text


Signal = Annotated[str, BeforeValidator(_signal)]


_CAPABILITY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _capability(value: Any) -> str:
    if not isinstance(value, str) or not _CAPABILITY.fullmatch(value):
        raise ValueError(f"invalid capability {value!r}: use a name such as NET_ADMIN or ALL")
    return value


Capability = Annotated[str, BeforeValidator(_capability)]


def _host_entry(value: Any) -> tuple[str, str]:
    """``host:ip`` or ``host=ip`` -> (host, ip), as Compose writes extra hosts."""
    if not isinstance(value, str):
        raise ValueError("must be a string HOST:IP (or HOST=IP), e.g. db.local:10.0.0.5")
    host, sep, ip = value.partition("=") if "=" in value else value.partition(":")
    if not sep or not host:
        raise ValueError(f"malformed extra host {value!r}: write HOST:IP or HOST=IP")
    return host, _host_ip(ip)


def _host_ip(value: Any) -> str:
    text = scalar_text(value).strip()
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
            entries_form,
            custom_error_type="extra_hosts",
            custom_error_message="must be a list of HOST:IP strings or a mapping HOST: IP",
        ),
        BeforeValidator(lambda value: {} if value is None else value),
        AfterValidator(_hosts_list),
    ]
    Sysctls = key_values("sysctl", bare="empty")


class Ulimit(ComposeModel):
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


class Logging(ComposeModel):
    """Docker's log driver and its options (``max-size: 10m``, ``max-file: "3"``)."""

    driver: NonEmptyText | None = None
    options: Options = {}


class Limits(ComposeModel):
    cpus: Cpus | None = None
    memory: ByteSize | None = None
    pids: PidsLimit | None = None


class Reservations(ComposeModel):
    memory: ByteSize | None = None


class Resources(ComposeModel):
    limits: Limits | None = None
    reservations: Reservations | None = None


# Why one engine refuses the Swarm keys of ``deploy`` (``SwarmKey``).
DEPLOY_REASON = (
    "unsupported key: the reconciler runs one container per service on one VM, so of "
    "deploy only resources (limits: memory, cpus, pids; reservations: memory) applies"
)


def _swarm_only(value: Any, info: ValidationInfo) -> Any:
    """Swarm's keys of ``deploy``: refused on one engine, typed by swarm_schema in swarm mode."""
    if not in_swarm_mode(info):
        raise ValueError(f"{DEPLOY_REASON}; {info.field_name} applies in swarm mode ({SWARM_DOCS})")
    return value


SwarmKey = Annotated[Any, AfterValidator(_swarm_only)]


class Deploy(ComposeModel):
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


NetworkMode = Annotated[str, BeforeValidator(_network_mode)]


# Docker's rule for container names: at least two characters.
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def _container_name(value: Any) -> str:
    if not isinstance(value, str) or not CONTAINER_NAME.fullmatch(value):
        raise ValueError(
            f"invalid container name {value!r}: use letters, digits, '.', '-' and '_', "
            "starting with a letter or a digit (at least two characters)"
        )
    return value


ContainerName = Annotated[str, BeforeValidator(_container_name)]
