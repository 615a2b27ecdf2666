"""Which engine a pass deploys to: a Swarm manager's services, one engine's
containers, and never a plain stack on a Swarm's worker (RECONCILER_ENGINE)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.deploy.passes import Reconciler
from reconciler.errors import EngineUnavailable
from reconciler.model.engine_mode import SwarmRole
from reconciler.model.observed import ObservedSwarm, ServiceProgress
from reconciler.ports import SwarmEngine
from reconciler.settings import load_settings
from tests.fixtures.fake_engine import FakeEngine
from tests.unit.test_passes import FakeSource


class SwarmMember(FakeEngine):
    """A fake engine in a given Swarm role; its Swarm calls are never made here."""

    def __init__(self, role: SwarmRole) -> None:
        super().__init__()
        self.role = role

    def swarm_role(self) -> SwarmRole:
        return self.role

    def _unused(self, *_: Any, **__: Any) -> Any:
        raise AssertionError("choosing the engine makes no Swarm call")

    def observe_swarm(self, project: str) -> ObservedSwarm:
        return self._unused()

    def progress(self, service_id: str) -> ServiceProgress:
        return self._unused()

    network_ids = object_ids = remaining_tasks = _unused
    create_object = remove_object = create_service = update_service = remove_service = _unused


def chosen(tmp_path: Path, role: SwarmRole, wanted: str) -> SwarmEngine | None:
    settings = load_settings(
        {
            "RECONCILER_REPO": "git://example.invalid/x",
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_PROJECT": "shop",
            "RECONCILER_ENV_FILE": "/dev/null",
            "RECONCILER_ENGINE": wanted,
        }
    )
    engine = SwarmMember(role)
    assert isinstance(engine, SwarmEngine)
    reconciler = Reconciler(settings, source=FakeSource(tmp_path / "commits"), engine=engine)
    return reconciler.swarm()


def test_a_manager_is_deployed_to_as_a_swarm_and_one_engine_as_one(tmp_path: Path) -> None:
    assert chosen(tmp_path, "manager", "auto") is not None
    assert chosen(tmp_path, "none", "auto") is None
    assert chosen(tmp_path, "manager", "engine") is None


def test_a_worker_is_refused_in_auto_mode_with_the_two_ways_out(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as refused:
        chosen(tmp_path, "worker", "auto")
    assert "a member of a Swarm but not a manager" in str(refused.value)
    assert "run the reconciler on a manager" in str(refused.value)
    assert "RECONCILER_ENGINE=engine" in str(refused.value)
    # Said outright, one engine it is.
    assert chosen(tmp_path, "worker", "engine") is None


def test_swarm_mode_asked_of_a_non_manager_says_how_to_make_one(tmp_path: Path) -> None:
    for role in ("worker", "none"):
        with pytest.raises(EngineUnavailable, match="not a Swarm manager: make it one"):
            chosen(tmp_path, role, "swarm")
