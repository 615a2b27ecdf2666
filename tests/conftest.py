"""Fixtures shared by the suite live in tests/fixtures/, one module per real part."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every reconciler the tests start (in-process or as a child) opens its backup
# repositories with this key, and reads volumes with the offline stand-in of
# its own image (images/local/restic: Debian's restic), as it would from its
# container. Tests about a missing or wrong key set their own.
TEST_BACKUP_KEY = "test-backup-key-not-a-secret"
TEST_HELPER_IMAGE = "reconciler-local/restic:local"
os.environ.setdefault("RECONCILER_BACKUP_KEY", TEST_BACKUP_KEY)
os.environ.setdefault("RECONCILER_HELPER_IMAGE", TEST_HELPER_IMAGE)

pytest_plugins = [
    "tests.fixtures.docker_engine",
    "tests.fixtures.git_remotes",
    "tests.fixtures.registry",
    "tests.fixtures.s3_server",
    "tests.faults.table",
]

# tests/run.sh runs the suite in two phases: every test that shares the engine,
# on several pytest-xdist workers at once; then, alone, the tests that stop
# the engine itself (which would stop every other worker's containers); last,
# alone, the tests that make the engine a Swarm manager (tests/swarm/).
ENGINE_PHASES = ("all", "shared", "exclusive", "swarm")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine-phase",
        choices=ENGINE_PHASES,
        default="all",
        help=(
            "shared: leave out the tests marked restarts_engine or swarm; exclusive: run only "
            "those marked restarts_engine; swarm: only those marked swarm"
        ),
    )


# The slowest files first (measured): each worker takes whole files, and a long
# one handed out last would leave the other workers idle at the end.
SLOW_FIRST = (
    "tests/faults/test_kill_backup.py",
    "tests/faults/test_state_full.py",
    "tests/faults/test_kill_apply.py",
    "tests/faults/test_kill_restore.py",
    "tests/faults/test_state_corrupt.py",
    "tests/faults/test_s3_faults.py",
    "tests/faults/",
    "tests/integration/test_install.py",
    "tests/e2e/",
    "tests/integration/",
    "tests/fuzz/",
)


def _slowness_rank(item: pytest.Item) -> int:
    return next((i for i, p in enumerate(SLOW_FIRST) if item.nodeid.startswith(p)), len(SLOW_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_slowness_rank)  # stable: file order and test order within a file stay
    phase = config.getoption("--engine-phase")
    if phase == "all":
        return
    kept = [item for item in items if _phase_of(item) == phase]
    left_out = [item for item in items if item not in kept]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def _phase_of(item: pytest.Item) -> str:
    if item.get_closest_marker("swarm") is not None:
        return "swarm"
    return "exclusive" if item.get_closest_marker("restarts_engine") is not None else "shared"


@pytest.fixture(autouse=True)
def no_machine_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings read in-process never pick up this machine's /etc/reconciler/reconciler.env
    (a developer's own install): tests say what they set."""
    monkeypatch.setattr("reconciler.settings.DEFAULT_ENV_FILE", str(tmp_path / "no-env-file"))
