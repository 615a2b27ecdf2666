"""Fault injection against the real engine, git and S3: shared fixtures.

The results table, the seed and ``CaseResult`` live in tests/faults/table.py
(a plugin of the root conftest, so the table is printed whichever worker ran
the case).
"""

from __future__ import annotations

import random

import pytest

from tests.faults.table import RESULTS, SEED, CaseResult


@pytest.fixture
def fault_case(request: pytest.FixtureRequest) -> CaseResult:
    """The result record of this test's case, named after the test."""
    name = request.node.name.removeprefix("test_")
    result = CaseResult(name=name, planned=0)
    RESULTS[name] = result
    return result


@pytest.fixture
def fault_rng(request: pytest.FixtureRequest) -> random.Random:
    """A generator seeded from the session seed and the test's name: one case replays alone."""
    return random.Random(f"{SEED}:{request.node.name}")
