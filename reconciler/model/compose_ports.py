"""A service's ``ports`` and ``expose``: port numbers and ranges as Compose writes them.

``Port`` parses the short syntax (``[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]``)
into its long form; ``ExposedPort`` is one entry of ``expose`` (a port or a
range, with its protocol). No I/O here: model/compose_checks.py checks that
published ports do not clash.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, model_validator

from reconciler.model.compose_values import SWARM_DOCS, ComposeModel, in_swarm_mode

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


class Port(ComposeModel):
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


# One entry of ``expose``: (first port, last port, protocol).
ExposedPort = Annotated[tuple[int, int, str], BeforeValidator(_expose)]
