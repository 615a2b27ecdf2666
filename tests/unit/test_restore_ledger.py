"""The restore ledger: atomic, run-once, and interrupted entries recovered, never re-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.decide.restore_planning import due_requests
from reconciler.errors import LedgerUnreadable
from reconciler.model.restore_requests import RestoreRequest
from reconciler.restore.restore_ledger import RestoreLedger, RestoreRecord, status_report


def test_queue_start_finish_and_run_once(tmp_path: Path) -> None:
    ledger = RestoreLedger(tmp_path)
    ledger.queue([RestoreRecord(id="a", state="pending"), RestoreRecord(id="b", state="pending")])
    ledger.start("a")
    ledger.update("a", state="succeeded", backup="2026-11-27T05-04-00Z")
    # Queuing again (a re-applied commit) changes nothing known.
    ledger.queue([RestoreRecord(id="a", state="pending", commit="other")])
    states = ledger.load().states()
    assert states == {"a": "succeeded", "b": "pending"}
    wanted = [RestoreRequest(id=i) for i in ("a", "b", "c")]
    assert [r.id for r in due_requests(wanted, states)] == ["b", "c"]
    raw = json.loads((tmp_path / "restores.json").read_text())
    assert raw["restores"][0]["backup"] == "2026-11-27T05-04-00Z"


def test_running_left_by_a_dead_process_becomes_interrupted(tmp_path: Path) -> None:
    ledger = RestoreLedger(tmp_path)
    ledger.queue([RestoreRecord(id="a", state="pending")])
    ledger.start("a")
    ledger.update(
        "a",
        safety_copy="s3://b/prod/pre-restore/a",
        safety_copy_backup="2026-11-28T00-00-00Z",
        pid=2**22 + 17,  # no such process
    )
    # status, which reads without the lock, already tells the truth.
    shown = status_report(tmp_path)[0]
    assert shown["state"] == "interrupted"
    assert ledger.recover() == ["a"]
    record = ledger.load().get("a")
    assert record is not None
    assert record.state == "interrupted"
    assert record.finished is not None
    assert record.hint is not None
    assert "source: s3://b/prod/pre-restore/a" in record.hint
    assert "new id" in record.hint
    assert ledger.recover() == []  # final: never re-run, never re-marked
    assert due_requests([RestoreRequest(id="a")], ledger.load().states()) == []


def test_status_report_newest_first_with_hint(tmp_path: Path) -> None:
    ledger = RestoreLedger(tmp_path)
    ledger.queue([RestoreRecord(id="old", state="pending")])
    ledger.update("old", state="failed", error="boom")
    ledger.queue([RestoreRecord(id="new", state="pending")])
    ledger.start("new")  # our own pid: alive, so still running
    report = status_report(tmp_path)
    assert [r["id"] for r in report] == ["new", "old"]
    assert report[0]["state"] == "running"
    assert report[1]["error"] == "boom"
    assert "nothing was overwritten" in report[1]["hint"]
    for key in ("id", "state", "backup", "started", "finished", "error", "safety_copy"):
        assert key in report[1]


def test_a_corrupt_ledger_is_never_read_as_its_previous_copy(tmp_path: Path) -> None:
    ledger = RestoreLedger(tmp_path)
    ledger.queue([RestoreRecord(id="a", state="pending")])
    ledger.start("a")
    ledger.update("a", state="succeeded")
    # .prev is one write older ("running"), two writes older it was "pending".
    path = tmp_path / "restores.json"
    path.write_text("{half a docu")
    for action in (ledger.load, ledger.recover, lambda: ledger.queue([])):
        with pytest.raises(LedgerUnreadable) as caught:
            action()
        assert str(path) in str(caught.value)
        assert "no restore request runs" in str(caught.value)
    # Left where it is for the user to inspect; nothing replaced it.
    assert path.read_text() == "{half a docu"
    assert json.loads((tmp_path / "restores.json.prev").read_text())["restores"][0]["id"] == "a"
    report = status_report(tmp_path)
    assert report[0]["state"] == "unknown"
    assert str(path) in report[0]["error"]


def test_a_missing_ledger_next_to_its_previous_copy_stops_restores(tmp_path: Path) -> None:
    ledger = RestoreLedger(tmp_path)
    ledger.queue([RestoreRecord(id="a", state="pending")])
    ledger.update("a", state="succeeded")
    (tmp_path / "restores.json").unlink()
    with pytest.raises(LedgerUnreadable, match=r"is missing but restores\.json\.prev exists"):
        ledger.load()


def test_a_ledger_of_the_wrong_shape_stops_restores(tmp_path: Path) -> None:
    (tmp_path / "restores.json").write_text('{"restores": [{"state": "nonsense"}]}')
    with pytest.raises(LedgerUnreadable):
        RestoreLedger(tmp_path).load()
    assert status_report(tmp_path)[0]["state"] == "unknown"
