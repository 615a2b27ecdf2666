"""Idempotency against the real Docker engine, for a sample of random desired states.

The property of ``test_planning_properties.py`` on the real thing: apply a
random desired state (busybox services with volumes, networks, aliases,
dependencies, health checks, restart policies and labels) on top of what a
prior random one left, observe the engine again, plan again: nothing to do.
This catches what the in-memory engine cannot: a field Docker normalises or
drops, a label it does not give back, a network it names differently, any of
which would make every pass recreate a service.

Few examples (each runs real containers); derandomized, so CI always draws the
same ones. Every example has its own project, removed afterwards.
"""

from __future__ import annotations

import secrets

import docker
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from reconciler.adapters.docker_engine import DockerEngine
from reconciler.decide.actions import describe
from reconciler.decide.planning import plan
from reconciler.deploy.applying import apply
from reconciler.model.desired import DesiredState
from tests.fixtures.docker_engine import BUSYBOX_IMAGE, remove_project
from tests.fuzz import state_strategies as ss

# A shell that exits on SIGTERM: busybox's sleep as PID 1 ignores it, and every
# stop would wait out the grace period.
COMMAND = ("sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")


def _states(project: str) -> st.SearchStrategy[DesiredState]:
    return ss.desired_states(
        project=project,
        images=st.just(BUSYBOX_IMAGE),
        command=COMMAND,
        externals=False,
        published_ports=False,  # Docker picks host ports: no clash with anything on this host
        grace_s=2.0,
    )


@pytest.mark.integration
@settings(
    max_examples=5,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_plan_after_apply_on_the_real_engine_is_empty(
    data: st.DataObject, docker_client: docker.DockerClient, busybox_image: str
) -> None:
    project = "tfz" + secrets.token_hex(4)
    engine = DockerEngine(docker_client)
    try:
        for commit, stop_one in (("prior", False), ("next", data.draw(st.booleans()))):
            desired = data.draw(_states(project), label=commit)
            if stop_one:
                # Something stopped by hand between passes comes back too.
                ours = [
                    c
                    for c in engine.observe(project).containers
                    if c.project == project and c.state == "running"
                ]
                if ours:
                    engine.stop_container(ours[0].id, timeout_s=2)
            result = plan(desired, engine.observe(project))
            note(f"{commit}: {[describe(a) for a in result.actions]}")
            assert result.conflicts == ()
            apply(result, engine, project=project, commit=commit)
        again = plan(desired, engine.observe(project))
        assert again.conflicts == ()
        assert [describe(a) for a in again.actions] == []
    finally:
        remove_project(docker_client, project)
