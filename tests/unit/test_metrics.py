"""Metrics and health over state files: missing, corrupt and full, read as Prometheus would."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.backup import backup_status
from reconciler.backup.backup_jobs import SCHEDULE_FILE
from reconciler.cli import main
from reconciler.daemon.endpoints import Endpoints, health_report
from reconciler.daemon.loop import heartbeat_path
from reconciler.daemon.metrics import PassMetrics, make_registry
from reconciler.deploy.passes import PassOutcome
from reconciler.errors import SettingsError
from reconciler.restore.restore_drill import DRILL_FILE, drill_counts
from reconciler.restore.restore_ledger import RestoreLedger, RestoreRecord
from reconciler.settings import Settings, load_settings
from reconciler.state.status import Status, StatusStore

SHA = "a" * 40
APPLIED = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    env = {"RECONCILER_STATE_DIR": str(tmp_path / "state"), "RECONCILER_REPO": "/nowhere"}
    return load_settings({**env, **extra})


def scrape(settings: Settings, listener_calls: Sequence[tuple[PassOutcome, float]] = ()) -> Samples:
    registry, pass_metrics = make_registry(settings)
    for outcome, duration in listener_calls:
        pass_metrics(outcome, duration)
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def test_missing_state_gives_defaults_and_leaves_out_what_is_unknown(tmp_path: Path) -> None:
    samples = scrape(settings_for(tmp_path))
    assert named(samples, "reconciler_ready") == {(("reason", "Progressing"),): 0.0}
    assert named(samples, "reconciler_loop_alive") == {(): 0.0}
    assert named(samples, "reconciler_backup_scheduled") == {(): 0.0}
    assert named(samples, "reconciler_restore_ledger_readable") == {(): 1.0}
    assert set(named(samples, "reconciler_restore_requests").values()) == {0.0}
    for absent in (
        "reconciler_applied_commit_info",
        "reconciler_applied_commit_timestamp_seconds",
        "reconciler_backup_last_success_timestamp_seconds",
        "reconciler_backup_last_success_size_bytes",
        "reconciler_restore_drills_total",
        "reconciler_heartbeat_timestamp_seconds",
    ):
        assert not named(samples, absent), absent
    assert not (tmp_path / "state").exists()  # a scrape writes nothing


def write_full_state(state: Path) -> None:
    StatusStore(state).save(
        Status(
            project="site",
            branch="main",
            applied_commit=SHA,
            applied_at=APPLIED,
            last_sync=APPLIED + timedelta(minutes=5),
            last_result="stalled",
            ready=False,
            reason="ValidationFailed",
            consecutive_failures=3,
        )
    )
    good = backup_status.BackupStatus(
        time="2026-11-27T05:04:00+00:00", result="ok", id="b1", size=123456
    )
    backup_status.record(state, good)
    backup_status.record(
        state,
        backup_status.BackupStatus(time="2026-11-28T05:04:00+00:00", result="failed", error="x"),
    )
    (state / SCHEDULE_FILE).write_text(
        json.dumps({"at": "05:04", "timezone": "UTC", "next_run": "2026-11-29T05:04:00+00:00"})
    )
    ledger = RestoreLedger(state)
    states = ["succeeded", "succeeded", "failed", "interrupted", "skipped", "pending"]
    ledger.queue([RestoreRecord(id=f"r{i}", state="pending") for i in range(len(states))])
    for i, wanted in enumerate(states):
        if wanted != "pending":
            ledger.update(f"r{i}", state=wanted)
    (state / DRILL_FILE).write_text(
        json.dumps(
            {
                "time": "2026-11-26T01:00:00+00:00",
                "finished": "2026-11-26T01:02:00+00:00",
                "result": "failed",
                "counts": {"ok": 4, "failed": 2},
            }
        )
    )
    heartbeat_path(state).touch()


def test_full_state_is_read_at_scrape_time(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write_full_state(settings.state_dir)
    samples = scrape(settings)
    assert named(samples, "reconciler_ready") == {(("reason", "ValidationFailed"),): 0.0}
    assert named(samples, "reconciler_consecutive_failures") == {(): 3.0}
    assert named(samples, "reconciler_applied_commit_info") == {
        (("branch", "main"), ("commit", SHA), ("project", "site")): 1.0
    }
    assert named(samples, "reconciler_applied_commit_timestamp_seconds") == {
        (): APPLIED.timestamp()
    }
    assert named(samples, "reconciler_loop_alive") == {(): 1.0}
    # The last attempt failed; the last success (and its size) are carried over.
    assert named(samples, "reconciler_backup_last_attempt_success") == {(): 0.0}
    assert named(samples, "reconciler_backup_last_success_timestamp_seconds") == {
        (): datetime(2026, 11, 27, 5, 4, tzinfo=UTC).timestamp()
    }
    assert named(samples, "reconciler_backup_last_success_size_bytes") == {(): 123456.0}
    assert named(samples, "reconciler_backup_scheduled") == {(): 1.0}
    assert named(samples, "reconciler_restore_requests") == {
        (("state", "pending"),): 1.0,
        (("state", "running"),): 0.0,
        (("state", "succeeded"),): 2.0,
        (("state", "failed"),): 1.0,
        (("state", "interrupted"),): 1.0,
        (("state", "skipped"),): 1.0,
    }
    assert named(samples, "reconciler_restore_drills_total") == {
        (("result", "ok"),): 4.0,
        (("result", "failed"),): 2.0,
    }
    assert named(samples, "reconciler_restore_drill_last_success") == {(): 0.0}


def test_metrics_agree_with_status(tmp_path: Path) -> None:
    """The same typed report that ``reconciler status --json`` prints (minus its Docker call)."""
    from reconciler.status_report import collect

    settings = settings_for(tmp_path)
    write_full_state(settings.state_dir)
    samples = scrape(settings)
    report = collect(settings)
    assert report.errors == {}
    info = named(samples, "reconciler_applied_commit_info")
    assert [dict(labels)["commit"] for labels in info] == [report.applied_commit]
    assert named(samples, "reconciler_ready") == {(("reason", report.reason),): float(report.ready)}
    assert report.backup.last is not None
    assert named(samples, "reconciler_backup_last_success_size_bytes") == {
        (): report.backup.last.last_success_size
    }
    for state, count in named(samples, "reconciler_restore_requests").items():
        assert count == sum(1 for r in report.restores if r.state == dict(state)["state"])


def test_a_part_that_does_not_parse_is_left_out_and_named_not_guessed(tmp_path: Path) -> None:
    from reconciler.status_report import collect

    settings = settings_for(tmp_path)
    write_full_state(settings.state_dir)
    # A drill.json of the wrong shape (counts that are not numbers).
    (settings.state_dir / "drill.json").write_text('{"result": "ok", "counts": {"ok": "many"}}')
    report = collect(settings)
    assert report.drill is None
    assert "drill" in report.errors
    assert report.backup.last is not None  # the other parts still read
    samples = scrape(settings)
    assert not named(samples, "reconciler_restore_drills_total")
    assert named(samples, "reconciler_ready")


def test_a_ledger_that_does_not_validate_is_reported_unreadable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write_full_state(settings.state_dir)
    for path in settings.state_dir.glob("restores.json*"):
        path.write_text(json.dumps({"restores": [{"id": 1, "state": "weird"}]}))
    samples = scrape(settings)
    assert named(samples, "reconciler_restore_ledger_readable") == {(): 0.0}
    assert set(named(samples, "reconciler_restore_requests").values()) == {0.0}


def test_one_failing_section_leaves_the_others(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write_full_state(settings.state_dir)
    # A last success time that does not parse makes backup_report raise.
    data = json.loads((settings.state_dir / "backup-status.json").read_text())
    data.update(result="ok", last_success_time="yesterday")
    (settings.state_dir / "backup-status.json").write_text(json.dumps(data))
    samples = scrape(settings)
    assert not named(samples, "reconciler_backup_scheduled")
    assert named(samples, "reconciler_ready") == {(("reason", "ValidationFailed"),): 0.0}
    assert named(samples, "reconciler_restore_drills_total")


def test_pass_listener_counts_and_times_passes(tmp_path: Path) -> None:
    calls = [
        (PassOutcome("succeeded", "ReconciliationSucceeded"), 0.3),
        (PassOutcome("succeeded", "ReconciliationSucceeded"), 40.0),
        (PassOutcome("unavailable", "SourceUnavailable"), 0.05),
    ]
    samples = scrape(settings_for(tmp_path), calls)
    assert named(samples, "reconciler_passes_total") == {
        (("reason", "ReconciliationSucceeded"), ("result", "succeeded")): 2.0,
        (("reason", "SourceUnavailable"), ("result", "unavailable")): 1.0,
    }
    counts = named(samples, "reconciler_pass_duration_seconds_count")
    assert counts == {(("result", "succeeded"),): 2.0, (("result", "unavailable"),): 1.0}
    buckets = named(samples, "reconciler_pass_duration_seconds_bucket")
    assert buckets[(("le", "0.5"), ("result", "succeeded"))] == 1.0
    assert buckets[(("le", "60.0"), ("result", "succeeded"))] == 2.0
    assert named(samples, "reconciler_pass_duration_seconds_sum")[
        (("result", "succeeded"),)
    ] == pytest.approx(40.3)


def test_pass_listener_is_named_for_the_log() -> None:
    from prometheus_client import CollectorRegistry

    # passes.py names a crashed listener by getattr(listener, "__name__", repr(listener)).
    assert getattr(PassMetrics(CollectorRegistry()), "__name__", None) == "pass_metrics"


@pytest.mark.parametrize(
    ("previous", "result", "counts"),
    [
        (None, "ok", {"ok": 1, "failed": 0}),
        ({"result": "failed"}, "ok", {"ok": 1, "failed": 1}),
        ({"result": "ok", "counts": {"ok": 5, "failed": 1}}, "failed", {"ok": 5, "failed": 2}),
        ({"counts": {"ok": "x", "failed": -3}}, "ok", {"ok": 1, "failed": 0}),
    ],
)
def test_drill_counts_carry_over(
    previous: dict[str, Any] | None, result: str, counts: dict[str, int]
) -> None:
    assert drill_counts(previous, result) == counts


# -- health ------------------------------------------------------------------


def test_health_follows_the_heartbeat_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(tmp_path, RECONCILER_INTERVAL="60")
    code, body = health_report(settings)
    assert (code, body["alive"], body["heartbeat_age_s"]) == (503, False, None)
    beat = heartbeat_path(settings.state_dir)
    beat.parent.mkdir(parents=True)
    beat.touch()
    StatusStore(settings.state_dir).save(
        Status(applied_commit=SHA, ready=True, reason="ReconciliationSucceeded")
    )
    code, body = health_report(settings)
    assert code == 200
    assert body["alive"] is True
    assert body["ready"] is True
    assert body["reason"] == "ReconciliationSucceeded"
    assert body["applied_commit"] == SHA
    # Stuck: the last beat is older than the limit (3 intervals, at least 10 min).
    old = time.time() - 601
    os.utime(beat, (old, old))
    code, body = health_report(settings)
    assert (code, body["alive"]) == (503, False)
    # The container health check applies the very same rule.
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("RECONCILER_REPO", "/nowhere")
    monkeypatch.setenv("RECONCILER_INTERVAL", "60")
    assert main(["healthcheck"]) == 1
    beat.touch()
    assert main(["healthcheck"]) == 0


# -- settings ----------------------------------------------------------------


def test_metrics_address_defaults_to_loopback(tmp_path: Path) -> None:
    assert settings_for(tmp_path).metrics_bind == ("127.0.0.1", 9365)
    assert settings_for(tmp_path, RECONCILER_METRICS_ADDR="off").metrics_bind is None
    assert settings_for(tmp_path, RECONCILER_METRICS_ADDR="[::1]:9000").metrics_bind == (
        "::1",
        9000,
    )
    assert settings_for(tmp_path, RECONCILER_METRICS_ADDR="0.0.0.0:9365").metrics_bind == (
        "0.0.0.0",
        9365,
    )


@pytest.mark.parametrize(
    "value", [":9365", "9365", "localhost", "h:0", "h:65536", "::1:80", "a b:1"]
)
def test_a_bad_metrics_address_is_a_settings_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match=r"RECONCILER_METRICS_ADDR: .*HOST:PORT"):
        settings_for(tmp_path, RECONCILER_METRICS_ADDR=value)


# -- the HTTP server, in process -----------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_endpoints_serve_metrics_and_health(tmp_path: Path) -> None:
    port = free_port()
    settings = settings_for(tmp_path, RECONCILER_METRICS_ADDR=f"127.0.0.1:{port}")
    registry, _listener = make_registry(settings)
    endpoints = Endpoints(settings, registry)
    endpoints.start()
    try:
        assert endpoints.address == ("127.0.0.1", port)
        code, kind, text = get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200
        assert kind.startswith("text/plain")
        assert "reconciler_ready" in {f.name for f in text_string_to_metric_families(text)}
        code, kind, text = get(f"http://127.0.0.1:{port}/healthz")
        assert (code, kind, json.loads(text)["alive"]) == (503, "application/json", False)
        assert get(f"http://127.0.0.1:{port}/other")[0] == 404
    finally:
        endpoints.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_port_in_use_is_logged_and_the_daemon_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(tmp_path, RECONCILER_METRICS_ADDR=f"127.0.0.1:{port}")
        endpoints = Endpoints(settings, make_registry(settings)[0])
        endpoints.start()  # no exception
        assert endpoints.address is None
        endpoints.stop()
    assert [r.msg for r in caplog.records if r.levelname == "ERROR"] == ["metrics.unavailable"]


def test_off_serves_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, RECONCILER_METRICS_ADDR="off")
    endpoints = Endpoints(settings, make_registry(settings)[0])
    endpoints.start()
    assert endpoints.address is None
    endpoints.stop()
