"""images/local/build-base-images.sh's arguments, checked before anything is built.

An unknown name to ``--only`` is an error (exit 2) that lists the names the
script knows; it never ends in "done" with nothing built. No Docker needed: the
script refuses before it calls docker (a ``docker`` on PATH that fails proves it).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "images/local/build-base-images.sh"
KNOWN = ["busybox", "debian", "mariadb", "python", "openlitespeed", "restic", "phpmyadmin"]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("docker", "debootstrap", "apt-get"):
        fake = bin_dir / tool
        fake.write_text('#!/bin/sh\necho "$0 called" >&2\nexit 99\n')
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, env=env
    )


@pytest.mark.parametrize(
    "args", [["--only", "nope"], ["--only", "mariadb", "--only", "phpmyadmn"], ["--only"]]
)
def test_an_unknown_or_missing_name_is_an_error_listing_the_known_ones(
    tmp_path: Path, args: list[str]
) -> None:
    result = run(tmp_path, *args)

    assert result.returncode == 2, result.stderr
    assert "done" not in result.stderr
    assert "called" not in result.stderr  # refused before any tool ran
    assert "known: " + " ".join(KNOWN) in result.stderr


def test_an_unknown_argument_is_an_error(tmp_path: Path) -> None:
    result = run(tmp_path, "--colour")

    assert result.returncode == 2
    assert "unknown argument: --colour" in result.stderr


def test_every_known_name_has_its_stand_in(tmp_path: Path) -> None:
    # The derived images each have a folder with a Dockerfile next to the script.
    for name in KNOWN:
        if name not in {"busybox", "debian"}:
            assert (SCRIPT.parent / name / "Dockerfile").is_file(), name
    assert "phpmyadmin" in run(tmp_path, "--help").stdout


def test_the_missing_image_hint_names_only_stand_ins_the_script_builds() -> None:
    from reconciler.adapters.docker_engine import LOCAL_STAND_INS, _how_to_fix

    assert {only for only, _tag in LOCAL_STAND_INS.values()} == set(KNOWN)
    hint = _how_to_fix("phpmyadmin:5.2")
    assert "build-base-images.sh --only phpmyadmin" in hint
    assert "PHPMYADMIN_IMAGE=reconciler-local/phpmyadmin:local" in hint
    other = _how_to_fix("redis:7")
    assert "reconciler-local" not in other
    assert "build-base-images.sh" not in other


def test_the_webserver_base_hint_names_the_variable_the_default_stack_reads() -> None:
    # The webserver is built: its base is the build argument of WEBSERVER_BASE_IMAGE,
    # which desired-state/compose.yaml reads; an OPENLITESPEED_IMAGE would change nothing.
    from reconciler.adapters.docker_engine import _how_to_fix

    hint = _how_to_fix("litespeedtech/openlitespeed:1.8.3-lsphp83")
    assert "WEBSERVER_BASE_IMAGE=reconciler-local/openlitespeed:local" in hint
    assert "OPENLITESPEED_IMAGE" not in hint
    compose = (Path(__file__).resolve().parents[2] / "desired-state" / "compose.yaml").read_text()
    assert "${WEBSERVER_BASE_IMAGE:-litespeedtech/openlitespeed:" in compose
