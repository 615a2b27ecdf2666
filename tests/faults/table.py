"""The fault cases' results table: one row per case, printed at the end of the run.

Every case runs its fault several times (``RUNS`` constants in the test
modules) and records each run here; the table of case, runs and failures is
printed at the end of the pytest run (``pytest_terminal_summary``), so it
shows in CI output, in Markdown so it can be pasted into a note.

The suite runs on several pytest-xdist workers: each worker keeps the rows of
the cases it ran and hands them to the controller when it finishes
(``workeroutput``), which prints one table. This is a plugin of the root
conftest, not the faults folder's conftest, because the controller collects
nothing and so never loads that one.

Randomness (kill delays, fault choices) comes from one seed, printed in that
table: ``RECONCILER_FAULT_SEED=<seed> python -m pytest tests/faults`` replays it.
The controller draws it and passes it to its workers through the environment.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

SEED_VARIABLE = "RECONCILER_FAULT_SEED"
SEED = int(os.environ.get(SEED_VARIABLE) or secrets.randbelow(2**31))
_WORKER_OUTPUT_KEY = "fault_results"


@dataclass
class CaseResult:
    """One case's runs; a run that broke an invariant is a failure, with its message."""

    name: str
    planned: int
    runs: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def run(self, number: int) -> Iterator[None]:
        """One run: an AssertionError (a broken invariant) is recorded, and the loop goes on."""
        started = time.monotonic()
        try:
            yield
        except AssertionError as exc:
            self.failures.append(f"run {number}: {exc}\n{traceback.format_exc(limit=4)}")
        finally:
            self.runs += 1
            self.seconds += time.monotonic() - started

    def note(self, text: str) -> None:
        self.notes.append(text)

    def assert_clean(self) -> None:
        assert self.runs >= self.planned, f"{self.name}: only {self.runs} of {self.planned} ran"
        assert not self.failures, (
            f"{self.name}: {len(self.failures)} of {self.runs} runs broke an invariant "
            f"(seed {SEED}):\n" + "\n".join(self.failures)
        )


RESULTS: dict[str, CaseResult] = {}


def new_case(name: str, planned: int) -> CaseResult:
    """A case of its own in the table, for tests that run several (one per fault kind)."""
    result = CaseResult(name=name, planned=planned)
    RESULTS[name] = result
    return result


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers
        os.environ[SEED_VARIABLE] = str(SEED)


def pytest_sessionfinish(session: pytest.Session) -> None:
    output: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[_WORKER_OUTPUT_KEY] = json.dumps([asdict(r) for r in RESULTS.values()])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """A worker finished: its rows join the controller's table."""
    rows = json.loads((getattr(node, "workeroutput", None) or {}).get(_WORKER_OUTPUT_KEY, "[]"))
    for row in rows:
        RESULTS[row["name"]] = CaseResult(**row)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"fault injection ({SEED_VARIABLE}={SEED})")
    write("| case | runs | failures | seconds |")
    write("|---|---:|---:|---:|")
    for result in RESULTS.values():
        write(f"| {result.name} | {result.runs} | {len(result.failures)} | {result.seconds:.0f} |")
    total = sum(r.seconds for r in RESULTS.values())
    write(f"total: {sum(r.runs for r in RESULTS.values())} runs in {total:.0f} s")
    for result in RESULTS.values():
        for note in result.notes:
            write(f"- {result.name}: {note}")
