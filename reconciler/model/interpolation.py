"""Compose-style ``${VAR}`` interpolation of the loaded compose.yaml tree.

The loader runs this between parsing and validation: every string value (never
a key) is filled from the environment the reconciler runs with, so a password
can stay on the VM while compose.yaml is in git. Pure functions: the
environment is passed in as a mapping.

Supported forms, as in the Compose Specification:

- ``$VAR`` and ``${VAR}``: the value of VAR;
- ``${VAR:-default}``: default when VAR is unset or empty;
  ``${VAR-default}``: default when VAR is unset;
- ``${VAR:?message}``: an error when VAR is unset or empty;
  ``${VAR?message}``: an error when VAR is unset;
- ``${VAR:+alt}``: alt when VAR is set and not empty, else empty;
  ``${VAR+alt}``: alt when VAR is set, else empty;
- ``$$``: a literal ``$``;
- defaults and alternatives may themselves hold ``${...}`` (``${A:-${B}}``);
  they are only expanded when used.

One deliberate difference from Docker Compose: a variable that is unset and has
no default is an **error**, where Compose warns and substitutes an empty
string. A deploy must never start a database with an empty root password
because a line was missing from the env file on the VM. To accept an empty
value, say so: ``${VAR:-}`` or ``${VAR-}``.

Values of variables never appear in messages: they are often secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reconciler.errors import Issue
from reconciler.model.yaml_lines import KeyPath, LineMap

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")

ENV_FILE_HINT = "/etc/reconciler/reconciler.env"


class InterpolationError(ValueError):
    """A template that cannot be filled; the message names variables, never values."""


def unset_message(name: str) -> str:
    """How to fix an unset variable; shared with the loader's bare ``environment`` keys."""
    return (
        f"variable {name} is not set (set it in the env file on the VM, {ENV_FILE_HINT}, "
        f"or give a default with ${{{name}:-...}})"
    )


def interpolate_string(text: str, environ: Mapping[str, str]) -> str:
    """Fill every ``$`` template in ``text``; raise ``InterpolationError`` on the first problem."""
    value, end = _expand(text, 0, environ, stop_at_brace=False)
    assert end == len(text)
    return value


def _expand(
    text: str, pos: int, environ: Mapping[str, str], *, stop_at_brace: bool
) -> tuple[str, int]:
    """Expand from ``pos`` to the end, or to the ``}`` closing a nested word.

    Returns the expanded text and the index where scanning stopped (at the
    closing brace when ``stop_at_brace``, else ``len(text)``).
    """
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == "}" and stop_at_brace:
            return "".join(out), pos
        if char != "$":
            out.append(char)
            pos += 1
            continue
        nxt = text[pos + 1 : pos + 2]
        if nxt == "$":
            out.append("$")
            pos += 2
        elif nxt == "{":
            value, pos = _braced(text, pos + 2, environ)
            out.append(value)
        else:
            match = _NAME.match(text, pos + 1)
            if match is None:
                # Compose refuses these too ("invalid template"); the text may
                # be a secret, so say where, not what.
                raise InterpolationError(
                    f"invalid '$' at character {pos + 1}: write $$ for a literal '$', "
                    "or ${NAME} for a variable"
                )
            out.append(_lookup(match.group(), environ))
            pos = match.end()
    if stop_at_brace:
        raise InterpolationError("unclosed '${': a '}' is missing")
    return "".join(out), pos


def _braced(text: str, pos: int, environ: Mapping[str, str]) -> tuple[str, int]:
    """Expand ``${...}`` whose body starts at ``pos``; return the value and the end."""
    match = _NAME.match(text, pos)
    if match is None:
        raise InterpolationError(
            f"invalid '${{' at character {pos - 1}: expected a variable name, as in ${{NAME}}"
        )
    name = match.group()
    pos = match.end()
    if text[pos : pos + 1] == "}":
        return _lookup(name, environ), pos + 1
    if pos >= len(text):
        raise InterpolationError("unclosed '${': a '}' is missing")
    operator = next((op for op in _OPERATORS if text.startswith(op, pos)), None)
    if operator is None:
        raise InterpolationError(
            f"invalid '${{{name}' at character {match.start() - 1}: expected '}}' or one of "
            ":- - :? ? :+ + after the name"
        )
    word_start = pos + len(operator)
    value = environ.get(name)
    is_set = value is not None
    is_set_non_empty = bool(value)
    check_empty = operator.startswith(":")
    present = is_set_non_empty if check_empty else is_set
    kind = operator[-1]
    if kind == "?":
        # The message is taken literally: it is written in compose.yaml, and
        # expanding it could put a value in an error.
        end = _closing_brace(text, word_start)
        if not present:
            message = text[word_start:end]
            qualifier = "is not set or empty" if check_empty else "is not set"
            raise InterpolationError(
                f"variable {name} {qualifier}: {message}"
                if message
                else f"variable {name} {qualifier}"
            )
        assert value is not None
        return value, end + 1
    use_word = (not present) if kind == "-" else present
    if use_word:
        word, end = _expand(text, word_start, environ, stop_at_brace=True)
        return word, end + 1
    end = _closing_brace(text, word_start)
    if kind == "-":
        assert value is not None
        return value, end + 1
    return "", end + 1


def _closing_brace(text: str, pos: int) -> int:
    """Index of the ``}`` that closes the word starting at ``pos``, skipping nested ``${...}``."""
    depth = 0
    while pos < len(text):
        if text.startswith("$$", pos):
            pos += 2
            continue
        if text.startswith("${", pos):
            depth += 1
            pos += 2
            continue
        if text[pos] == "}":
            if depth == 0:
                return pos
            depth -= 1
        pos += 1
    raise InterpolationError("unclosed '${': a '}' is missing")


def _lookup(name: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    if value is None:
        raise InterpolationError(unset_message(name))
    return value


def interpolate(
    data: Any, environ: Mapping[str, str], *, line_map: LineMap
) -> tuple[Any, list[Issue]]:
    """Interpolate every string value of a loaded YAML tree.

    Returns the new tree and one issue per value that could not be filled (that
    value becomes an empty string, so later checks can go on). Values under
    ``x-*`` extension keys are left as they are: the reconciler ignores those
    keys, and an unused template there must not stop a deploy.
    """
    issues: list[Issue] = []
    result = _walk(data, (), environ, line_map, issues)
    return result, issues


def _walk(
    node: Any, path: KeyPath, environ: Mapping[str, str], line_map: LineMap, issues: list[Issue]
) -> Any:
    if isinstance(node, str):
        try:
            return interpolate_string(node, environ)
        except InterpolationError as exc:
            issues.append(line_map.issue(path, str(exc)))
            return ""
    if isinstance(node, dict):
        return {
            key: value
            if isinstance(key, str) and key.startswith("x-")
            else _walk(value, (*path, str(key)), environ, line_map, issues)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_walk(item, (*path, i), environ, line_map, issues) for i, item in enumerate(node)]
    return node
