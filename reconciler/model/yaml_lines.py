"""YAML with line numbers, and pydantic errors turned into ``file:line: key: message``.

Every desired-state file (compose.yaml, backup.yaml, restore.yaml) is read
through ``load_yaml``: it keeps the line of every key so that any later error,
from pydantic or from our own checks, can name where it is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from reconciler.errors import Issue

KeyPath = tuple[str | int, ...]


@dataclass
class LineMap:
    """Line (1-based) of every key path seen in a YAML document."""

    path: str
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key_path: Sequence[str | int]) -> int:
        """The line of the deepest known prefix of ``key_path`` (0 when unknown)."""
        parts = tuple(key_path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get((), 0)

    def issue(self, key_path: Sequence[str | int], message: str) -> Issue:
        return Issue(self.path, self.line_of(key_path), dotted(key_path), message)


def dotted(key_path: Sequence[str | int]) -> str:
    """``("services", "web", "ports", 0)`` -> ``services.web.ports[0]``."""
    out = ""
    for part in key_path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class YamlError(Exception):
    def __init__(self, issue: Issue) -> None:
        self.issue = issue
        super().__init__(str(issue))


_KEEP_TAGS = {"tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"}


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, as the Compose Specification does."""


_LEADING_ZERO = re.compile(r"0[0-7]+")


class LeadingZeroInt(int):
    """An integer written with a leading zero (``0440``), with the digits as written.

    Its value is the decimal one, as YAML 1.2 reads it; a file mode (``mode: 0440``
    under ``secrets:``) reads the digits as octal, as Docker Compose's go-yaml does.
    """

    text: str

    @classmethod
    def written(cls, text: str) -> LeadingZeroInt:
        number = cls(text)
        number.text = text
        return number


class _CoreLoader(_Loader):
    """YAML 1.2 core schema scalars, as Docker Compose reads them (go-yaml v3).

    PyYAML implements YAML 1.1, where ``80:22`` is the base-60 number 4822,
    ``no`` is false and ``0755`` is octal. In compose.yaml those surprise users
    (``restart: no``, ``ports: [2222:22]``), so the compose loader asks for 1.2.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEEP_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_yaml_int(self, node: yaml.Node) -> int:
        value = str(self.construct_scalar(node))  # type: ignore[arg-type]
        if value.startswith(("0o", "+0o", "-0o")):
            return int(value.replace("0o", ""), 8)
        if _LEADING_ZERO.fullmatch(value):
            return LeadingZeroInt.written(value)
        return int(value, 0) if value.lstrip("+-").startswith("0x") else int(value)


_CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_CoreLoader.add_constructor("tag:yaml.org,2002:int", _CoreLoader.construct_yaml_int)


def load_yaml(text: str, *, path: str, core_schema: bool = False) -> tuple[Any, LineMap]:
    """Parse one YAML document; return the plain data and the line of every key.

    Raises ``YamlError`` (with file and line) on a syntax error or a duplicate key.
    ``core_schema=True`` reads scalars as YAML 1.2 does (as Docker Compose does):
    only ``true``/``false`` are booleans and ``80:22`` stays a string.
    """
    loader: type[_Loader] = _CoreLoader if core_schema else _Loader
    line_map = LineMap(path)
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or str(exc)
        raise YamlError(Issue(path, line, "", f"invalid YAML: {problem}")) from exc
    except yaml.YAMLError as exc:
        raise YamlError(Issue(path, 0, "", f"invalid YAML: {exc}")) from exc
    if node is None:
        return None, line_map
    line_map.lines[()] = node.start_mark.line + 1
    _walk(node, (), line_map, _Budget(MAX_VALUES))
    try:
        data = yaml.load(text, Loader=loader)  # SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise YamlError(Issue(path, 0, "", f"invalid YAML: {exc}")) from exc
    return data, line_map


# Far more values than any desired-state file holds. Aliases make a tree whose
# expanded size grows exponentially with its text (the "billion laughs"): nine
# lines can mean 9**9 values, which every later step would walk.
MAX_VALUES = 100_000


@dataclass
class _Budget:
    left: int


def _walk(node: yaml.Node, prefix: KeyPath, line_map: LineMap, budget: _Budget) -> None:
    budget.left -= 1
    if budget.left < 0:
        raise YamlError(
            Issue(
                line_map.path,
                node.start_mark.line + 1,
                dotted(prefix),
                f"more than {MAX_VALUES} values once aliases (*name) are expanded: "
                "repeat less, or write the values out",
            )
        )
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlError(
                    Issue(
                        line_map.path,
                        line,
                        dotted((*prefix, key)),
                        f"duplicate key (first at line {seen[key]})",
                    )
                )
            seen[key] = line
            line_map.lines.setdefault((*prefix, key), line)
            _walk(value_node, (*prefix, key), line_map, budget)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            line_map.lines.setdefault((*prefix, index), item.start_mark.line + 1)
            _walk(item, (*prefix, index), line_map, budget)


def pydantic_issues(
    error: ValidationError,
    line_map: LineMap,
    *,
    model: type[BaseModel] | None = None,
    prefix: KeyPath = (),
    explain_extra: Callable[[KeyPath, list[str]], str | None] | None = None,
) -> list[Issue]:
    """Turn pydantic's errors into our issues, one per problem, with lines.

    Unknown keys get "unknown key" and a suggestion when one is close, so a
    typo reads ``services.web.imagee: unknown key (did you mean 'image'?)``.
    ``explain_extra(loc, known_keys)`` may give a better message for a key that
    is not a typo (e.g. a Compose key the reconciler does not support).
    Several errors pydantic reports for one location (one per member of a
    union) become one issue.
    """
    issues: list[Issue] = []
    union_issues: list[Issue] = []
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        from_union = len(loc) != len(err["loc"])
        key_path: KeyPath = (*prefix, *loc)
        if err["type"] == "extra_forbidden":
            known = _known_fields(model, loc[:-1]) if model else []
            unknown = str(loc[-1]) if loc else ""
            explained = explain_extra(loc, known) if explain_extra else None
            message = explained or "unknown key"
            close = (
                None if explained else difflib.get_close_matches(unknown, known, n=1, cutoff=0.6)
            )
            if close:
                message += f" (did you mean '{close[0]}'?)"
            elif known and not explained:
                message += f" (supported: {', '.join(sorted(known))})"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = _clean(err["msg"])
        issue = line_map.issue(key_path, message)
        issues.append(issue)
        if from_union:
            union_issues.append(issue)
    return _collapse_unions(_dedupe(issues), union_issues)


def unknown_name(kind: str, name: str, known: Iterable[str], compose_path: str) -> str:
    """``unknown volume 'stie' (did you mean 'site'?)``, or the names compose.yaml declares."""
    names = list(known)
    message = f"unknown {kind} '{name}'"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    return f"{message}: {compose_path} declares {', '.join(sorted(names)) or 'none'}"


def _is_union_tag(part: str | int) -> bool:
    # pydantic adds the union member's name to locations (e.g. "str", "list[str]",
    # "function-after[...]"); they mean nothing to the user.
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "list", "dict"}
        or "[" in part
        or part.startswith(("function-", "tagged-union", "nullable"))
    )


def _known_fields(model: type[BaseModel], loc: Iterable[str | int]) -> list[str]:
    """Field names (by alias) of the model found by following ``loc`` from ``model``."""
    current: Any = model
    skip_next = False  # the next part is a user's key into a dict of models
    for part in loc:
        if isinstance(part, int) or skip_next:
            skip_next = False
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        match = next(
            (f for name, f in fields.items() if (f.alias or name) == part or name == part),
            None,
        )
        if match is None:
            return []
        skip_next = _is_mapping(match.annotation)
        current = _model_in(match.annotation)
        if current is None:
            return []
    fields = getattr(current, "model_fields", {})
    return [f.alias or name for name, f in fields.items()]


def _is_mapping(annotation: Any) -> bool:
    if getattr(annotation, "__origin__", None) is dict:
        return True
    return any(_is_mapping(arg) for arg in getattr(annotation, "__args__", ()) or ())


def _model_in(annotation: Any) -> Any:
    """The first BaseModel class inside an annotation like ``dict[str, Service] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _clean(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _collapse_unions(issues: list[Issue], union_issues: list[Issue]) -> list[Issue]:
    """One issue per location for a failed union: pydantic reports it once per member."""
    merged: dict[tuple[str, int, str], list[str]] = {}
    for issue in union_issues:
        messages = merged.setdefault((issue.path, issue.line, issue.key), [])
        if issue.message not in messages:
            messages.append(issue.message)
    out: list[Issue] = []
    done: set[tuple[str, int, str]] = set()
    for issue in issues:
        where = (issue.path, issue.line, issue.key)
        if where not in merged or issue not in union_issues:
            out.append(issue)
        elif where not in done:
            done.add(where)
            out.append(Issue(issue.path, issue.line, issue.key, "; or ".join(merged[where])))
    return out


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, int, str, str]] = set()
    out: list[Issue] = []
    for issue in issues:
        key = (issue.path, issue.line, issue.key, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out
