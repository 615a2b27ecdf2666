"""The daemon's backup job and the status report, over an injected loader and runner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.backup import backup_status
from reconciler.backup.backup_jobs import BackupContext, backup_job, backup_report
from reconciler.model.backup_policy import BackupPolicy, Schedule
from reconciler.model.desired import DesiredState
from reconciler.settings import Settings, load_settings
from reconciler.state.status import Status, StatusStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def settings_in(tmp_path: Path) -> Settings:
    return load_settings(environ={"RECONCILER_STATE_DIR": str(tmp_path)})


def context(settings: Settings, commit: str, at: str = "05:04") -> BackupContext:
    return BackupContext(
        settings=settings,
        desired=DesiredState(project="shop", services={}, networks={}, volumes={}),
        policy=BackupPolicy(target="file:///tmp/x", schedule=Schedule(at=at, timezone="UTC")),
        commit=commit,
    )


def record_success(state_dir: Path, when: datetime) -> None:
    backup_status.record(
        state_dir,
        backup_status.BackupStatus(time=when.isoformat(), result="ok", id="x", size=1),
    )


def test_nothing_before_a_commit_is_applied(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    runs: list[str] = []
    job = backup_job(
        settings,
        loader=lambda s: context(s, "c1"),
        run=lambda c: runs.append("run"),
        clock=lambda: NOW,
    )
    job()
    assert runs == []


def test_missed_backup_at_start_then_the_schedule(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    StatusStore(tmp_path).save(Status(applied_commit="c1"))
    record_success(tmp_path, NOW - timedelta(days=2))
    loads: list[str] = []
    runs: list[str | None] = []

    def loader(s: Settings) -> BackupContext:
        commit = StatusStore(tmp_path).load().applied_commit or "?"
        loads.append(commit)
        return context(s, commit, at="23:59" if commit == "c2" else "05:04")

    job = backup_job(
        settings, loader=loader, run=lambda c: runs.append(c.commit), clock=lambda: NOW
    )
    job()
    assert runs == ["c1"]  # missed: the last good backup is two days old
    job()
    assert runs == ["c1"]
    assert loads == ["c1"]  # loaded once per applied commit

    report = backup_report(settings, now=lambda: NOW)
    assert report["schedule"] == "daily at 05:04 UTC"
    assert report["next"] is not None
    assert report["error"] == "no good backup in the last day"

    StatusStore(tmp_path).save(Status(applied_commit="c2"))
    job()
    assert loads == ["c1", "c2"]
    assert backup_report(settings, now=lambda: NOW)["schedule"] == "daily at 23:59 UTC"


def test_report_of_a_failure(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    record_success(tmp_path, NOW - timedelta(hours=3))
    backup_status.record(
        tmp_path,
        backup_status.BackupStatus(
            time=NOW.isoformat(), result="failed", error="S3 at http://x cannot be reached"
        ),
    )
    report = backup_report(settings, now=lambda: NOW)
    assert report["last"]["result"] == "failed"
    assert report["last"]["last_success_id"] == "x"  # kept across the failure
    assert report["error"] == "the last backup failed: S3 at http://x cannot be reached"


def test_status_file_is_replaced_whole(tmp_path: Path) -> None:
    record_success(tmp_path, NOW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup-status.json"]
    assert backup_status.last_success(tmp_path) == NOW
