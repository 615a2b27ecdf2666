"""Reading the commit's text files strictly: every problem at its line.

A file of the desired state that is not UTF-8, or an env file with a line that
does not parse, is refused with the line (and column) of the first bad byte or
line, never decoded with replacement characters and never skipped: a guessed
value is worse than a stalled deploy. No I/O beyond the bytes handed in.
"""

from __future__ import annotations

import io
import re

from dotenv.parser import parse_stream

from reconciler.errors import InvalidDesiredState, Issue

# What Compose and a shell accept as a variable name; a line such as `"oops`
# parses as a key in python-dotenv but is a typo in every real env file.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def decode_text(data: bytes, *, path: str) -> str:
    """``data`` as UTF-8 text, or ``InvalidDesiredState`` naming the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDesiredState([not_utf8_issue(data, exc, path=path)]) from None


def not_utf8_issue(data: bytes, error: UnicodeDecodeError, *, path: str) -> Issue:
    """``PATH:LINE: not UTF-8 text: byte 0xE9 at column 12 ...`` for a decode error."""
    start = error.start
    line = data.count(b"\n", 0, start) + 1
    line_start = data.rfind(b"\n", 0, start) + 1
    # Columns count characters, as editors do: decode what precedes the byte.
    column = len(data[line_start:start].decode("utf-8", errors="replace")) + 1
    return Issue(
        path,
        line,
        "",
        f"not UTF-8 text: byte 0x{data[start]:02X} at column {column} (save the file as UTF-8)",
    )


def parse_env_text(text: str, *, path: str) -> tuple[dict[str, str | None], list[Issue]]:
    """The ``KEY=VALUE`` lines of an env file, and an issue for each line that is not one.

    A bare ``KEY`` maps to None (Compose takes its value from the environment).
    Later lines win over earlier ones, as in Compose.
    """
    values: dict[str, str | None] = {}
    issues: list[Issue] = []
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            # The line itself is not quoted: it may hold a secret's value.
            issues.append(
                Issue(path, line, "", "not a KEY=VALUE line (quote a value that has spaces)")
            )
        elif binding.key is not None:
            if not _NAME.fullmatch(binding.key):
                issues.append(
                    Issue(path, line, "", f"{_shortened(binding.key)!r} is not a variable name")
                )
            else:
                values[binding.key] = binding.value
    return values, issues


def _shortened(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."
