"""When a service starts and restarts: ``depends_on``, ``healthcheck`` and ``restart``.

``depends_on`` orders the services (a list of names, or a mapping with a
condition each); a ``healthcheck`` says when a service counts as healthy (the
``service_healthy`` condition); ``restart`` is Docker's restart policy.
No I/O here: model/compose_checks.py checks that the dependencies exist.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from reconciler.model.compose_values import ComposeModel, Duration, require_mapping


class DependsOn(ComposeModel):
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
        require_mapping(data, "options such as condition: service_healthy")
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


class HealthCheck(ComposeModel):
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


Dependencies = Annotated[dict[str, DependsOn], BeforeValidator(_depends_list)]
Restart = Annotated[str, BeforeValidator(_restart)]
