"""The invariants every fault case checks after every run, one precise helper each.

- ``check_services``: every desired service has exactly one container, named
  ``<project>-<service>-1``, running, labelled, from the expected commit; no
  other container of the project (a duplicate, a ``-old-`` one renamed aside,
  a leftover helper) and none named like the project without its labels.
- ``check_volumes``: every volume still exists and holds every sentinel file
  written into it before the fault.
- ``check_backups``: every backup ``backup list --json`` shows as complete
  passes ``backup verify ID``.
- ``check_restores_once``: the ledger and ``status`` show each request id once.
- ``check_converged``: status says ready, on the remote's head.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors

from reconciler import labels
from tests.e2e.conftest import Cli

SENTINEL_PREFIX = ".fault-sentinel-"


def check_services(
    client: docker.DockerClient,
    project: str,
    services: Iterable[str],
    *,
    environment: Mapping[str, str] | None = None,
    helpers_allowed: bool = False,
) -> None:
    """Exactly the desired containers, one each, running, labelled; ``environment`` in each.

    ``helpers_allowed``: a helper a killed backup left is not counted (the next
    backup removes it; ``check_no_helpers`` checks that after it)."""
    wanted = {labels.container_name(project, s): s for s in services}
    found: dict[str, dict[str, Any]] = {}
    for raw in client.api.containers(all=True):
        name = raw["Names"][0].lstrip("/")
        tags = raw.get("Labels") or {}
        if helpers_allowed and labels.HELPER in tags:
            continue
        own = tags.get(labels.PROJECT) == project
        if own or name.startswith(f"{project}-"):
            found[name] = raw
    extra = sorted(set(found) - set(wanted))
    assert not extra, f"containers beyond the desired ones: {extra}"
    missing = sorted(set(wanted) - set(found))
    assert not missing, f"containers lost: {missing}"
    for name, service in wanted.items():
        raw = found[name]
        if raw["State"] != "running":
            state = client.api.inspect_container(raw["Id"])["State"]
            raise AssertionError(f"{name} is {raw['State']}, not running: {state}")
        tags = raw.get("Labels") or {}
        assert tags.get(labels.PROJECT) == project, f"{name} lacks its project label"
        assert tags.get(labels.SERVICE) == service, f"{name} lacks its service label"
        if environment:
            env = client.api.inspect_container(raw["Id"])["Config"]["Env"] or []
            for key, value in environment.items():
                assert f"{key}={value}" in env, f"{name} runs without {key}={value}: {env}"


def volume_path(client: docker.DockerClient, volume: str) -> Path:
    """The volume's folder on this machine (the tests run as root beside the engine)."""
    return Path(client.api.inspect_volume(volume)["Mountpoint"])


def write_sentinels(
    client: docker.DockerClient, volumes: Iterable[str], sentinels: dict[str, set[str]]
) -> None:
    """A new sentinel file in each volume, remembered in ``sentinels`` (volume -> names)."""
    for volume in volumes:
        name = SENTINEL_PREFIX + secrets.token_hex(4)
        (volume_path(client, volume) / name).write_text(name)
        sentinels.setdefault(volume, set()).add(name)


def check_volumes(client: docker.DockerClient, sentinels: Mapping[str, set[str]]) -> None:
    """Every volume exists and holds every sentinel written into it."""
    for volume, names in sentinels.items():
        try:
            root = volume_path(client, volume)
        except docker.errors.NotFound:
            raise AssertionError(f"volume {volume} lost") from None
        lost = sorted(n for n in names if not (root / n).is_file())
        assert not lost, f"volume {volume} lost its sentinel files {lost}"


def check_converged(cli: Cli, head: str) -> dict[str, Any]:
    status = cli.status()
    assert status["applied_commit"] == head, (
        f"applied {status['applied_commit']}, remote head {head}: {status.get('last_error')}"
    )
    assert status["ready"] is True, f"not ready: {status['reason']}: {status.get('last_error')}"
    return status


def sync_converges(cli: Cli, head: str) -> dict[str, Any]:
    """One ``sync`` after the fault is gone converges, without any manual step."""
    result = cli.run("sync", timeout=240)
    assert result.returncode == 0, f"sync after the fault failed:\n{result.stderr[-3000:]}"
    return check_converged(cli, head)


def check_backups(cli: Cli, verified: set[str], *, target: str | None = None) -> list[str]:
    """Every backup listed as complete verifies; ``verified`` skips the ones already checked."""
    extra = ["--target", target] if target else []
    listed = cli.run("backup", "list", "--json", *extra, timeout=120)
    assert listed.returncode == 0, f"backup list failed: {listed.stderr[-2000:]}"
    complete = [b["id"] for b in json.loads(listed.stdout) if b["state"] == "complete"]
    for ident in complete:
        if ident in verified:
            continue
        result = cli.run("backup", "verify", ident, *extra, timeout=180)
        assert result.returncode == 0, (
            f"backup {ident} is listed as complete but does not verify: "
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
        verified.add(ident)
    return complete


def ledger(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "restores.json"
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = json.loads(path.read_text()).get("restores", [])
    return entries


def check_restores_once(cli: Cli, state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each request id once in the ledger and in status; returns status's records by id."""
    ids = [entry["id"] for entry in ledger(state_dir)]
    assert len(ids) == len(set(ids)), f"the ledger lists an id twice: {ids}"
    shown = [r["id"] for r in cli.status()["restores"]]
    assert len(shown) == len(set(shown)), f"status lists an id twice: {shown}"
    return {r["id"]: r for r in cli.status()["restores"]}


def check_no_helpers(client: docker.DockerClient, project: str) -> None:
    """No helper container (archive, dump, drill) of the project is left behind."""
    helpers = client.api.containers(
        all=True, filters={"label": [f"{labels.PROJECT}={project}", labels.HELPER]}
    )
    assert not helpers, f"helper containers left: {[h['Names'] for h in helpers]}"
