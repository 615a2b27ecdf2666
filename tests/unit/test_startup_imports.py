"""What a command imports: ``reconciler sync`` must not load the backup and restore engines.

Every ``reconciler`` command is a new process (``docker exec``, cron, the
healthcheck every 30 s), so what it imports is paid on each run: a no-op sync
is mostly interpreter start and imports (bench/noop_sync_bench.py). This checks
the modules, not the time, so it cannot flake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Loaded only when a backup, a restore or a drill actually runs.
ENGINE_MODULES = (
    "boto3",
    "reconciler.adapters.restic",
    "reconciler.adapters.object_store",
    "reconciler.backup.backing_up",
    "reconciler.backup.backup_writing",
    "reconciler.backup.manifests",
    "reconciler.backup.stored_backups",
    "reconciler.backup.backup_jobs",
    "reconciler.restore.restoring",
    "reconciler.restore.restore_pass",
    "reconciler.restore.restore_drill",
    "reconciler.cli.backup",
    "reconciler.cli.restore",
)

PROBE = """
import json, sys
from reconciler.cli import build_parser
from reconciler.wiring import make_reconciler
from reconciler.settings import load_settings

build_parser(sys.argv[1]).parse_args([sys.argv[1]])
make_reconciler(load_settings())
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(command: str, tmp_path: Path, *, probe: str = PROBE) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env |= {
        "RECONCILER_REPO": str(tmp_path / "repo"),
        "RECONCILER_STATE_DIR": str(tmp_path / "state"),
        "RECONCILER_ENV_FILE": "/dev/null",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    out = subprocess.run(
        [sys.executable, "-c", probe, command], env=env, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("command", ["sync", "plan"])
def test_a_pass_by_hand_does_not_import_the_backup_and_restore_engines(
    command: str, tmp_path: Path
) -> None:
    loaded = _modules_after(command, tmp_path) & set(ENGINE_MODULES)
    assert not loaded, f"`reconciler {command}` imports {sorted(loaded)}"


def test_the_probe_sees_an_engine_module_once_it_is_imported(tmp_path: Path) -> None:
    # The check above is only worth something if the probe can see a hit.
    probe = PROBE.replace("print(", "import reconciler.backup.backing_up\nprint(")
    assert "reconciler.backup.backing_up" in _modules_after("sync", tmp_path, probe=probe)
