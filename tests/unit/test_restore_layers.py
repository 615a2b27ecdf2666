"""The pure parts of restores (restore.yaml, planning) import nothing of Docker or S3."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["reconciler.model.restore_requests", "reconciler.decide.restore_planning"]
)
def test_pure_modules_import_no_adapter_library(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'docker', 'boto3', 'botocore', 'zstandard', 'git', 'requests'})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
