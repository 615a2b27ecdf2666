"""What a service mounts: its ``volumes`` (named, anonymous or bind) and ``tmpfs``.

``ServiceVolume`` parses the short syntax (``SOURCE:TARGET[:ro|rw]``) into its
long form; whether a source is a host path or a volume name is told by its
first character, as in Compose. The top-level volumes are
``compose_schema.Volume``. No I/O here: model/loading.py checks the paths.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, model_validator

from reconciler.model.compose_values import ComposeModel, string_list


def _is_host_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


class ServiceVolume(ComposeModel):
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


def _tmpfs(value: Any) -> str:
    """``/run`` or ``/run:size=64m,mode=1777``: a container path, then Docker's options."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(
            "must be an absolute path in the container, optionally with options "
            "(/run or /run:size=64m)"
        )
    return value


# ``tmpfs``: one path or a list of them.
TmpfsMounts = Annotated[list[Annotated[str, BeforeValidator(_tmpfs)]], BeforeValidator(string_list)]
