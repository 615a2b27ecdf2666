"""The planner on random desired states and engines: a plan or a clear conflict, then nothing to do.

For any ``DesiredState`` and any engine left by an earlier apply (of this or
another project) and disturbed afterwards (see ``state_strategies``):

- ``plan`` returns a ``Plan``, never raises; a conflict is a sentence that says
  how to resolve it;
- a plan without conflicts applies on ``FakeEngine`` without error, and
  planning again against what the engine then holds gives nothing to do: no
  action and no conflict (idempotency).

``test_idempotency_real_engine.py`` checks a sample of the same property
against the real Docker engine.
"""

from __future__ import annotations

from hypothesis import given, note
from hypothesis import strategies as st

from reconciler.decide.actions import describe
from reconciler.decide.planning import plan
from reconciler.deploy.applying import apply
from reconciler.model.desired import DesiredState
from tests.fixtures.fake_engine import FakeEngine
from tests.fuzz import state_strategies as ss

PROJECT = "shop"


@given(desired=ss.desired_states(project=PROJECT), engine=ss.engines(project=PROJECT))
def test_plan_is_a_plan_or_a_clear_conflict(desired: DesiredState, engine: FakeEngine) -> None:
    note(ss.show(engine))
    observed = engine.observe(PROJECT)
    result = plan(desired, observed)
    for conflict in result.conflicts:
        assert conflict.strip()
        assert any(word in conflict for word in ("remove", "create", "declare")), conflict
    for action in result.actions:
        assert describe(action)
    # Pure: the same input gives the same plan.
    assert plan(desired, observed) == result


@given(desired=ss.desired_states(project=PROJECT), engine=ss.engines(project=PROJECT))
def test_after_apply_nothing_is_left_to_do(desired: DesiredState, engine: FakeEngine) -> None:
    note(ss.show(engine))
    first = plan(desired, engine.observe(PROJECT))
    if first.conflicts:
        return  # never applied; the property above checks the conflicts say why
    apply(first, engine, project=PROJECT, commit="c1")
    second = plan(desired, engine.observe(PROJECT))
    assert second.conflicts == ()
    assert [describe(a) for a in second.actions] == []


@given(
    first=ss.desired_states(project=PROJECT),
    second=ss.desired_states(project=PROJECT),
    engine=ss.engines(project=PROJECT),
    data=st.data(),
)
def test_a_change_of_desired_state_converges_too(
    first: DesiredState, second: DesiredState, engine: FakeEngine, data: st.DataObject
) -> None:
    """Two commits in a row: each applies, and the second leaves nothing to do."""
    note(ss.show(engine))
    for commit, desired in (("c1", first), ("c2", second)):
        result = plan(desired, engine.observe(PROJECT))
        if result.conflicts:
            return
        apply(result, engine, project=PROJECT, commit=commit)
    assert plan(second, engine.observe(PROJECT)).empty
