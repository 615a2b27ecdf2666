"""Which log format a command writes: text for a person, JSON for the daemon and scripts."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path


def test_a_person_at_a_terminal_reads_text_even_when_the_env_file_says_json(
    tmp_path: Path,
) -> None:
    # install.sh writes RECONCILER_LOG_FORMAT=json for the daemon's log.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env |= {
        "RECONCILER_REPO": str(tmp_path / "no-such-repo"),
        "RECONCILER_STATE_DIR": str(tmp_path / "state"),
        "RECONCILER_ENV_FILE": "/dev/null",
        "RECONCILER_LOG_FORMAT": "json",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    outputs = {}
    for label, flags in (("terminal", []), ("flag", ["--log-format", "json"])):
        parent, child = pty.openpty()
        subprocess.run(
            [sys.executable, "-m", "reconciler", *flags, "sync"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=child,
            timeout=120,
            check=False,
        )
        os.close(child)
        chunks = []
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # EIO: the other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(parent)
        outputs[label] = b"".join(chunks).decode()
    assert "sync.failed" in outputs["terminal"]
    assert '"event"' not in outputs["terminal"]
    assert '"event": "sync.failed"' in outputs["flag"]
    piped = subprocess.run(
        [sys.executable, "-m", "reconciler", "sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert '"event": "sync.failed"' in piped.stderr  # scripts and cron keep JSON
