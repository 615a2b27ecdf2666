"""The env file install.sh writes lists every setting the reconciler reads, with its default."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.settings import _NAMES

INSTALL = Path(__file__).resolve().parents[2] / "install.sh"


def _env_template() -> str:
    text = INSTALL.read_text()
    start = text.index("write_env_file() {")
    return text[start : text.index("\n}\n", text.index("env_defaults() {")) + 1]


def test_every_setting_is_in_the_env_file_set_or_at_its_default() -> None:
    template = _env_template()
    missing = [name for name in _NAMES if not re.search(rf"\b{name}=", template)]
    assert not missing, f"install.sh's env file does not list {missing}"


def test_the_poll_interval_is_listed_with_its_default() -> None:
    assert re.search(r"^# RECONCILER_INTERVAL=60 ", _env_template(), re.M)
