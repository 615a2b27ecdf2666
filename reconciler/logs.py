"""Structured logging: one line per event, JSON in the daemon, readable in a terminal.

Call ``event("sync.done", commit=..., changes=3)``; ``configure()`` picks the
format once per process. Every string field passes through ``redact_text`` so a
token in a git URL never reaches a log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER = logging.getLogger("reconciler")


def _redact(value: str) -> str:
    # Imported lazily: redaction lives with the git adapter's helpers.
    try:
        from reconciler.redaction import redact_text
    except ImportError:  # pragma: no cover - only while the module is missing
        return value
    return redact_text(value)


def _redact_secrets(text: str) -> str:
    from reconciler.redaction import redact_secrets

    return redact_secrets(text)


def event(name: str, *, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log one event with its fields (and the exception being handled, if asked)."""
    LOGGER.log(level, name, exc_info=exc_info, extra={"event_fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": _redact(record.getMessage()),
        }
        for key, value in getattr(record, "event_fields", {}).items():
            line[key] = _redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = _redact(self.formatException(record.exc_info))
        # Fields that are not strings (lists, objects) are masked here, whole.
        return _redact_secrets(json.dumps(line, default=str, sort_keys=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        parts = [stamp, f"{record.levelname.lower():<7}", _redact(record.getMessage())]
        for key, value in getattr(record, "event_fields", {}).items():
            text = _redact(str(value)) if value is not None else "-"
            if " " in text:
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + _redact(self.formatException(record.exc_info))
        return _redact_secrets(line)


def configure(fmt: str = "auto", *, stream: TextIO | None = None, verbose: bool = False) -> None:
    """Send reconciler events to ``stream`` (stderr), as JSON or text.

    ``auto`` means text in a terminal and JSON otherwise (the daemon in a container).
    """
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.DEBUG if verbose else logging.INFO)
    LOGGER.propagate = False
