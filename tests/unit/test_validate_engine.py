"""``reconciler validate --engine``, RECONCILER_ENGINE, and how ``auto`` asks the engine."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.docker_engine import DockerEngine
from reconciler.cli import main
from reconciler.errors import SettingsError, Unavailable
from reconciler.model.engine_mode import SwarmRole
from reconciler.settings import load_settings
from reconciler.wiring import validate_engine_mode

SWARM_STACK = """
name: shop
services:
  web:
    image: registry.example.com/shop/web:1.4.2
    ports: ["80:80"]
    deploy:
      replicas: 2
"""


class Probe:
    def __init__(self, answer: bool | None) -> None:
        self.answer = answer
        self.closed = False

    def swarm_role(self) -> SwarmRole:
        if self.answer is None:
            raise Unavailable("Docker engine unavailable at unix:///nowhere: no such socket")
        return "manager" if self.answer else "none"

    def close(self) -> None:
        self.closed = True


def test_reconciler_engine_is_a_setting_auto_by_default() -> None:
    assert load_settings({}).engine == "auto"
    assert load_settings({"RECONCILER_ENGINE": "swarm"}).engine == "swarm"
    with pytest.raises(SettingsError, match="RECONCILER_ENGINE"):
        load_settings({"RECONCILER_ENGINE": "kubernetes"})


@pytest.mark.parametrize(("answer", "mode"), [(True, "swarm"), (False, "engine"), (None, "engine")])
def test_auto_asks_the_engine_and_takes_one_engine_when_it_cannot(
    answer: bool | None, mode: str
) -> None:
    probe = Probe(answer)

    assert validate_engine_mode(load_settings({}), probe) == mode
    assert probe.closed


def test_a_set_engine_is_not_asked() -> None:
    probe = Probe(None)

    assert validate_engine_mode(load_settings({"RECONCILER_ENGINE": "swarm"}), probe) == "swarm"
    assert validate_engine_mode(load_settings({"RECONCILER_ENGINE": "engine"}), probe) == "engine"


class _Api:
    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info

    def info(self) -> dict[str, Any]:
        return self._info


class _Client:
    def __init__(self, info: dict[str, Any]) -> None:
        self.api = _Api(info)

    def close(self) -> None:
        pass


def test_the_adapter_reads_docker_info() -> None:
    manager = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}
    worker = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}

    assert DockerEngine(_Client(manager)).swarm_role() == "manager"
    assert DockerEngine(_Client(worker)).swarm_role() == "worker"
    assert DockerEngine(_Client({"Swarm": {"LocalNodeState": "inactive"}})).swarm_role() == "none"


def folder(tmp_path: Path) -> Path:
    stack = tmp_path / "desired-state"
    stack.mkdir()
    (stack / "compose.yaml").write_text(textwrap.dedent(SWARM_STACK).lstrip())
    return stack


def test_validate_engine_swarm_accepts_a_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECONCILER_ENV_FILE", str(tmp_path / "none.env"))
    (tmp_path / "none.env").write_text("")
    stack = folder(tmp_path)

    assert main(["validate", str(stack), "--engine", "swarm"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{stack}: valid (project shop; services: web; swarm mode)"
    )


def test_validate_engine_engine_refuses_swarms_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECONCILER_ENV_FILE", str(tmp_path / "none.env"))
    (tmp_path / "none.env").write_text("")
    # The setting is the default; --engine wins over it.
    monkeypatch.setenv("RECONCILER_ENGINE", "swarm")
    stack = folder(tmp_path)

    assert main(["validate", str(stack), "--engine", "engine"]) == 1
    out = capsys.readouterr().out
    assert "desired-state/compose.yaml:7: services.web.deploy.replicas: unsupported key" in out
    assert 'replicas applies in swarm mode (docs/operations.md, "Growing past one VM")' in out

    assert main(["validate", str(stack)]) == 0
    assert "swarm mode" in capsys.readouterr().out
