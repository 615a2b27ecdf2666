"""Restore requests in the pass: a failing after-apply step fails the sync, not the apply."""

from __future__ import annotations

from pathlib import Path

import docker.errors
import pytest

from reconciler.deploy.passes import Reconciler
from reconciler.errors import AfterApplyFailed
from reconciler.model.desired import DesiredState
from reconciler.ports import Checkout
from reconciler.restore.restore_hook import restore_hook
from reconciler.restore.restore_ledger import RestoreLedger, RestoreRecord
from reconciler.settings import Settings, load_settings
from reconciler.state.status import Status
from tests.fixtures.fake_engine import FakeEngine
from tests.unit.test_passes import GOOD, FakeSource, sha


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "RECONCILER_REPO": "git://example.invalid/x",
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_PROJECT": "shop",
            "RECONCILER_ENV_FILE": "",
        }
    )


def no_docker() -> object:
    raise AssertionError("no restore is due: Docker must not be asked")


def test_a_malformed_restore_yaml_fails_the_sync_but_the_commit_is_applied(
    tmp_path: Path, settings: Settings
) -> None:
    source = FakeSource(tmp_path / "commits")
    engine = FakeEngine()
    reconciler = Reconciler(
        settings,
        source=source,
        engine=engine,
        after_apply=[restore_hook(settings, client_factory=no_docker)],
    )
    commit = source.commit(sha(1), GOOD)
    (tmp_path / "commits" / commit / "desired-state" / "restore.yaml").write_text(
        "restores:\n  - id: a\n    volumes: [nope]\n  - id: a\n"
    )
    outcome = reconciler.sync()
    assert outcome.result == "failed"
    assert "desired-state/restore.yaml:3: restores[0].volumes[0]: unknown volume 'nope'" in (
        outcome.message
    )
    assert "the rest of the commit was applied" in outcome.message
    assert [c.name for c in engine.observe("shop").containers] == ["shop-web-1"]
    status = reconciler.store.load()
    assert status.applied_commit == commit
    assert status.last_result == "failed"
    assert not (settings.state_dir / "restores.json").exists()


def test_known_ids_never_ask_docker_and_interrupted_ones_are_recovered(
    tmp_path: Path, settings: Settings
) -> None:
    ledger = RestoreLedger(settings.state_dir)
    ledger.queue(
        [RestoreRecord(id="done", state="pending"), RestoreRecord(id="x", state="pending")]
    )
    ledger.update("done", state="succeeded")
    ledger.start("x")
    ledger.update("x", pid=2**22 + 3)
    source = FakeSource(tmp_path / "commits")
    asked: list[str] = []

    def leftovers_only() -> object:
        # Docker is asked once, to remove the helpers the interrupted restore
        # left (found by tests/faults/test_kill_restore.py); here it does not
        # answer, which is logged and does not fail the pass.
        asked.append("client")
        raise docker.errors.DockerException("no engine in a unit test")

    reconciler = Reconciler(
        settings,
        source=source,
        engine=FakeEngine(),
        after_apply=[restore_hook(settings, client_factory=leftovers_only)],
    )
    commit = source.commit(sha(2), GOOD)
    (tmp_path / "commits" / commit / "desired-state" / "restore.yaml").write_text(
        "restores:\n  - id: done\n  - id: x\n"
    )
    outcome = reconciler.sync()
    assert outcome.ok, outcome.message
    assert ledger.load().states() == {"done": "succeeded", "x": "interrupted"}
    assert asked == ["client"]
    # Recovered once: the next pass asks nothing.
    reconciler.after_apply = [restore_hook(settings, client_factory=no_docker)]
    assert reconciler.sync().ok


def test_after_apply_failure_keeps_other_changes(tmp_path: Path, settings: Settings) -> None:
    def failing(_c: Checkout, _d: DesiredState, _s: Status) -> list[str]:
        raise AfterApplyFailed("restore b failed: boom", done=["restore a: ok"])

    source = FakeSource(tmp_path / "commits")
    reconciler = Reconciler(settings, source=source, engine=FakeEngine(), after_apply=[failing])
    source.commit(sha(3), GOOD)
    outcome = reconciler.sync()
    assert outcome.result == "failed"
    assert outcome.reason == "ApplyFailed"
    assert outcome.message == "restore b failed: boom"
    assert "restore a: ok" in outcome.changes


def test_no_docker_leaves_new_requests_pending_for_the_next_pass(
    tmp_path: Path, settings: Settings
) -> None:
    def unreachable() -> object:
        raise docker.errors.DockerException("no socket")

    source = FakeSource(tmp_path / "commits")
    reconciler = Reconciler(
        settings,
        source=source,
        engine=FakeEngine(),
        after_apply=[restore_hook(settings, client_factory=unreachable)],
    )
    source.commit(sha(40), GOOD)
    assert reconciler.sync().ok  # this VM's first pass: its ledger starts empty
    commit = source.commit(sha(4), GOOD)
    (tmp_path / "commits" / commit / "desired-state" / "restore.yaml").write_text(
        "restores:\n  - id: later\n"
    )
    outcome = reconciler.sync()
    assert outcome.result == "failed"
    assert "restore requests could not start: no socket" in outcome.message
    assert RestoreLedger(settings.state_dir).load().states() == {"later": "pending"}


def test_safety_copies_go_to_the_target_unless_a_local_folder_is_set(tmp_path: Path) -> None:
    from reconciler.restore.restore_pass import safety_target

    base = {"RECONCILER_REPO": "git://example.invalid/x", "RECONCILER_ENV_FILE": ""}
    assert safety_target(load_settings(base), "s3://b/prod") == "s3://b/prod"
    local = load_settings({**base, "RECONCILER_SAFETY_COPY_DIR": str(tmp_path / "safety")})
    assert safety_target(local, "s3://b/prod") == f"file://{tmp_path / 'safety'}"


def test_a_running_backup_defers_requests_without_waiting(
    tmp_path: Path, settings: Settings
) -> None:
    from reconciler.backup.backing_up import backup_lock

    class Client:
        def close(self) -> None:
            pass

    source = FakeSource(tmp_path / "commits")
    reconciler = Reconciler(
        settings,
        source=source,
        engine=FakeEngine(),
        after_apply=[restore_hook(settings, client_factory=Client)],
    )
    source.commit(sha(50), GOOD)
    assert reconciler.sync().ok  # this VM's first pass: its ledger starts empty
    commit = source.commit(sha(5), GOOD)
    (tmp_path / "commits" / commit / "desired-state" / "restore.yaml").write_text(
        "restores:\n  - id: soon\n"
    )
    # A backup holds its lock (and would wait for the pass lock to stop services).
    with backup_lock(settings.state_dir):
        outcome = reconciler.sync()
    assert outcome.result == "failed"
    assert "restore soon waits: a backup is running" in outcome.message
    assert RestoreLedger(settings.state_dir).load().states() == {"soon": "pending"}


def test_requests_listed_before_a_vms_first_pass_are_skipped_not_run(
    tmp_path: Path, settings: Settings
) -> None:
    """A replacement VM must not replay the old VM's restores over its data."""
    source = FakeSource(tmp_path / "commits")
    reconciler = Reconciler(
        settings,
        source=source,
        engine=FakeEngine(),
        after_apply=[restore_hook(settings, client_factory=no_docker)],
    )
    commit = source.commit(sha(6), GOOD)
    (tmp_path / "commits" / commit / "desired-state" / "restore.yaml").write_text(
        "restores:\n  - id: old-1\n  - id: old-2\n"
    )

    outcome = reconciler.sync()

    assert outcome.ok, outcome.message
    assert "restore old-1: skipped (listed before this VM's first pass)" in outcome.changes
    assert RestoreLedger(settings.state_dir).load().states() == {
        "old-1": "skipped",
        "old-2": "skipped",
    }
    assert reconciler.sync().ok  # and they stay skipped


def test_a_lost_ledger_runs_nothing(tmp_path: Path, settings: Settings) -> None:
    source = FakeSource(tmp_path / "commits")
    reconciler = Reconciler(
        settings,
        source=source,
        engine=FakeEngine(),
        after_apply=[restore_hook(settings, client_factory=no_docker)],
    )
    source.commit(sha(7), GOOD)
    assert reconciler.sync().ok
    for leftover in settings.state_dir.glob("restores.json*"):
        leftover.unlink()
    commit = source.commit(sha(8), GOOD)
    (tmp_path / "commits" / commit / "desired-state" / "restore.yaml").write_text(
        "restores:\n  - id: r1\n"
    )

    outcome = reconciler.sync()

    assert outcome.result == "failed"
    assert "restore ledger" in outcome.message
    assert "is missing" in outcome.message


def test_recovering_an_interrupted_restore_starts_what_it_was_stopping(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by tests/faults/test_kill_restore.py: killed during `docker stop web`,
    # the engine finished the stop after the next pass had seen web running.
    from reconciler.adapters import stack_control
    from reconciler.model.desired import ServiceSpec
    from reconciler.restore.restore_pass import recover_interrupted

    calls: list[str] = []
    monkeypatch.setattr(
        stack_control, "stop_service", lambda _c, _p, name, grace_s: calls.append(f"stop {name}")
    )
    monkeypatch.setattr(
        stack_control, "start_service", lambda _c, _p, name: calls.append(f"start {name}")
    )
    monkeypatch.setattr(
        stack_control, "remove_leftovers", lambda _c, project, purposes: calls.append("leftovers")
    )

    class Client:
        def close(self) -> None:
            calls.append("closed")

    desired = DesiredState(
        project="shop",
        services={n: ServiceSpec(name=n, image="busybox") for n in ("web", "api", "db")},
        networks={},
        volumes={},
    )
    records = [
        RestoreRecord(id="k", state="interrupted", done=["stopping web", "stopped web"]),
        RestoreRecord(id="old", state="succeeded", done=["stopping api"]),
        RestoreRecord(id="j", state="interrupted", done=["stopping db", "started db"]),
    ]
    recover_interrupted(settings, desired, Client, records, ["k", "j"])
    # By container name: that of the service's container (container_name or Compose's).
    assert calls == ["stop shop-web-1", "start shop-web-1", "leftovers", "closed"]
