"""docs/metrics.md against the code: every metric it lists exists, and its alert rules work."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.daemon.metrics import HttpMetrics, make_registry
from reconciler.deploy.passes import PassOutcome
from reconciler.settings import load_settings
from tests.fixtures import tools
from tests.unit.test_metrics import write_full_state

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
CASE = ROOT / "tests" / "unit" / "cases" / "metrics_alerts.test.yml"


def exposed_families(tmp_path: Path) -> set[str]:
    """Every reconciler_* family a daemon with a full state and one pass exposes."""
    settings = load_settings(
        {"RECONCILER_STATE_DIR": str(tmp_path / "state"), "RECONCILER_REPO": "/nowhere"}
    )
    write_full_state(settings.state_dir)
    registry, listener = make_registry(settings)
    HttpMetrics(registry)  # the daemon's endpoints count into the same registry (wiring)
    listener(PassOutcome("succeeded", "ReconciliationSucceeded"), 1.0)
    text = generate_latest(registry).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("reconciler_"):
            # The parser names a counter family without _total and an info one without _info.
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            names.add(family.name + suffix)
    return names


def rules_block() -> str:
    match = re.search(r"## Example alert rules\n\n```yaml\n(.*?)```", DOC, re.S)
    assert match, "docs/metrics.md has no alert rules block"
    return match.group(1)


def test_the_metrics_table_lists_exactly_what_is_exposed(tmp_path: Path) -> None:
    documented = set(re.findall(r"^\| `(reconciler_[a-z_]+)` \|", DOC, re.M))
    assert documented == exposed_families(tmp_path)


def test_alert_rules_name_only_exposed_metrics(tmp_path: Path) -> None:
    groups = yaml.safe_load(rules_block())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "ReconcilerNotReady",
        "ReconcilerNoRecentBackup",
        "ReconcilerRestoreFailed",
    }
    exposed = exposed_families(tmp_path)
    for rule in rules:
        for name in re.findall(r"reconciler_[a-z_]+", rule["expr"]):
            assert name in exposed, f"{rule['alert']}: {name} is not a metric"


def test_alert_rules_fire_when_they_should(tmp_path: Path) -> None:
    """promtool's rule tests (tests/unit/cases/metrics_alerts.test.yml), Debian's promtool 2.42."""
    promtool = tools.require("promtool")
    (tmp_path / "rules.yml").write_text(rules_block())
    shutil.copy(CASE, tmp_path / "tests.yml")
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
