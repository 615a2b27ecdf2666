"""Fixtures shared by the suite live in tests/fixtures/, one module per real part."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.docker_engine",
    "tests.fixtures.git_remotes",
    "tests.fixtures.s3_server",
]


@pytest.fixture(autouse=True)
def no_machine_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings read in-process never pick up this machine's /etc/reconciler/reconciler.env
    (a developer's own install): tests say what they set."""
    monkeypatch.setattr("reconciler.settings.DEFAULT_ENV_FILE", str(tmp_path / "no-env-file"))
