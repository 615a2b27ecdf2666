"""The pass over in-memory seams: what each class of error does to what runs and to status."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from reconciler.daemon.loop import MAX_BACKOFF_S, next_delay
from reconciler.decide.actions import describe
from reconciler.deploy.passes import PassOutcome, Reconciler
from reconciler.errors import Unavailable
from reconciler.ports import Checkout
from reconciler.settings import load_settings
from reconciler.state.status import StatusStore
from tests.fixtures.fake_engine import FakeEngine

GOOD = """\
services:
  web:
    image: img:1
    environment: {VERSION: "VERSION_VALUE"}
"""


class FakeSource:
    """Commits as folders in tmp_path; ``head`` is what the remote points at."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.head = ""
        self.down = False
        self.fetches = 0

    def commit(self, sha: str, compose: str) -> str:
        folder = self.root / sha / "desired-state"
        folder.mkdir(parents=True)
        (folder / "compose.yaml").write_text(compose)
        self.head = sha
        return sha

    def remote_head(self) -> str:
        if self.down:
            raise Unavailable("git: cannot reach git://127.0.0.1:1/x")
        return self.head

    def checkout(self, commit: str) -> Checkout:
        self.fetches += 1
        return Checkout(commit, self.root / commit)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Reconciler, FakeSource, FakeEngine]:
    settings = load_settings(
        {
            "RECONCILER_REPO": "git://example.invalid/x",
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_PROJECT": "shop",
            "RECONCILER_ENV_FILE": "/dev/null",
        }
    )
    source = FakeSource(tmp_path / "commits")
    engine = FakeEngine()
    return Reconciler(settings, source=source, engine=engine), source, engine


def sha(n: int) -> str:
    return f"{n:040x}"


def test_sync_applies_and_records(setup: tuple[Reconciler, FakeSource, FakeEngine]) -> None:
    reconciler, source, engine = setup
    source.commit(sha(1), GOOD.replace("VERSION_VALUE", "1"))

    outcome = reconciler.sync()

    assert outcome.ok, outcome.message
    assert engine.by_name("shop-web-1") is not None
    status = reconciler.store.load()
    assert status.applied_commit == sha(1)
    assert status.ready
    assert status.reason == "ReconciliationSucceeded"
    assert status.history[0].changes


def test_a_recreate_names_what_changed_in_the_plan_the_status_and_after_a_restart(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    source.commit(sha(1), GOOD.replace("VERSION_VALUE", "one-value"))
    assert reconciler.sync().ok
    source.commit(sha(2), GOOD.replace("VERSION_VALUE", "two-value"))
    reason = "recreate service web: environment.VERSION changed"

    # A new process (the CLI, a restarted daemon) knows only what the containers say.
    fresh = Reconciler(reconciler.settings, source=source, engine=engine, own_container=None)
    planned = fresh.plan_only().plan
    assert planned is not None
    assert [describe(a) for a in planned.actions] == [reason]

    outcome = reconciler.sync()
    assert outcome.ok, outcome.message
    assert outcome.changes == [reason]
    assert reconciler.store.load().history[0].changes == [reason]  # status --json
    assert "two-value" not in reason


def test_second_pass_is_a_no_op_that_still_observes(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    source.commit(sha(1), GOOD)
    reconciler.sync()
    engine.calls.clear()

    outcome = reconciler.sync()

    assert outcome.ok
    assert outcome.changes == []
    # Level-based: Docker is re-read; image GC lists the project's built images.
    assert engine.call_names() == ["observe", "list_images"]


def test_invalid_commit_changes_nothing_and_stalls(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    source.commit(sha(1), GOOD)
    reconciler.sync()
    before = dict(engine.containers)
    source.commit(sha(2), GOOD.replace("image:", "imagee:"))

    outcome = reconciler.sync()

    assert outcome.result == "stalled"
    assert "desired-state/compose.yaml:3: services.web.imagee: unknown key" in outcome.message
    assert engine.containers == before
    status = reconciler.store.load()
    assert status.applied_commit == sha(1)
    assert status.attempted_commit == sha(2)
    assert status.stalled_commit == sha(2)
    assert not status.ready


def test_invalid_commit_still_repairs_drift_of_the_applied_commit(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    source.commit(sha(1), GOOD)
    reconciler.sync()
    web = engine.by_name("shop-web-1")
    assert web is not None
    del engine.containers[web.id]  # removed by hand
    source.commit(sha(2), "services: [")

    outcome = reconciler.sync()

    assert outcome.result == "stalled"
    assert engine.by_name("shop-web-1") is not None
    assert outcome.changes == ["create service web: no container"]


def test_source_unavailable_touches_nothing(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    source.commit(sha(1), GOOD)
    reconciler.sync()
    engine.calls.clear()
    source.down = True

    outcome = reconciler.sync()

    assert (outcome.result, outcome.reason) == ("unavailable", "SourceUnavailable")
    assert engine.calls == []
    assert reconciler.store.load().applied_commit == sha(1)


def test_engine_unavailable_is_not_nothing_runs(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    source.commit(sha(1), GOOD)
    engine.fail["observe"] = Unavailable("Docker engine unavailable at unix:///x")

    outcome = reconciler.sync()

    assert (outcome.result, outcome.reason) == ("unavailable", "EngineUnavailable")
    assert engine.call_names() == ["observe"]


def test_conflict_stops_before_any_change(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    engine.add_container("shop-web-1")  # not ours
    source.commit(sha(1), GOOD)

    outcome = reconciler.sync()

    assert (outcome.result, outcome.reason) == ("failed", "Conflict")
    assert "docker rm -f shop-web-1" in outcome.message
    assert engine.call_names() == ["observe"]


def test_missing_image_is_reported_as_such(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    engine.missing_images.add("img:1")
    source.commit(sha(1), GOOD)

    outcome = reconciler.sync()

    assert (outcome.result, outcome.reason) == ("failed", "ImageUnavailable")
    assert not engine.containers


def test_corrupt_status_file_is_set_aside(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, _engine = setup
    source.commit(sha(1), GOOD)
    reconciler.sync()
    source.commit(sha(2), GOOD.replace("VERSION_VALUE", "2"))
    reconciler.sync()
    path = reconciler.store.path
    path.write_text('{"applied_commit": "trunc')

    status = StatusStore(path.parent).load()

    # The previous good document is used; the corrupt one is kept for a post-mortem.
    assert status.applied_commit == sha(1)
    assert list(path.parent.glob("status.json.corrupt-*"))
    assert reconciler.sync().ok
    assert reconciler.store.load().applied_commit == sha(2)


def test_backoff_grows_while_unavailable_and_is_bounded() -> None:
    unavailable = PassOutcome("unavailable", "SourceUnavailable")
    delays = [next_delay(unavailable, interval_s=30, failures=n) for n in range(1, 12)]
    assert delays[0] <= 5
    assert max(delays) <= MAX_BACKOFF_S
    assert delays[-1] >= MAX_BACKOFF_S / 2
    ok = PassOutcome("succeeded", "ReconciliationSucceeded")
    assert 27 <= next_delay(ok, interval_s=30, failures=0) <= 33


def test_a_change_to_its_own_container_is_handed_over(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "RECONCILER_REPO": "git://example.invalid/x",
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_PROJECT": "shop",
        }
    )
    source = FakeSource(tmp_path / "commits")
    engine = FakeEngine()
    source.commit(sha(1), GOOD + "  reconciler:\n    image: reconciler:2\n")
    own = engine.add_container(
        "shop-reconciler-1",
        labels={
            "dev.reconciler.project": "shop",
            "dev.reconciler.service": "reconciler",
            "dev.reconciler.config-hash": "old",
        },
        image="reconciler:1",
    )
    reconciler = Reconciler(settings, source=source, engine=engine, own_container=own.id)

    outcome = reconciler.sync()

    assert outcome.ok, outcome.message
    assert engine.by_name("shop-web-1") is not None  # the rest of the pass applied
    mine = engine.by_name("shop-reconciler-1")
    assert mine is not None
    assert mine.id == own.id  # never stopped by its own pass
    assert mine.state == "running"
    helper = engine.by_name("shop-reconciler-self-update")
    assert helper is not None
    assert helper.image == "reconciler:2"
    assert any("handed over" in line for line in outcome.changes)


def test_a_bug_in_a_pass_is_logged_and_the_daemon_carries_on(
    setup: tuple[Reconciler, FakeSource, FakeEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from reconciler.daemon.loop import Daemon

    reconciler, _source, _engine = setup
    calls: list[int] = []

    def broken_sync() -> PassOutcome:
        calls.append(1)
        raise RuntimeError("a bug")

    monkeypatch.setattr(reconciler, "sync", broken_sync)
    monkeypatch.setattr("reconciler.daemon.loop.next_delay", lambda *_a, **_k: 0.01)
    heard: list[str] = []
    reconciler.listeners = [lambda outcome, _took: heard.append(outcome.reason)]

    class Service:
        """A background service (the metrics endpoint): started and stopped with the loop."""

        def __init__(self) -> None:
            self.log: list[str] = []

        def start(self) -> None:
            self.log.append("start")

        def stop(self) -> None:
            self.log.append("stop")

    service = Service()
    daemon = Daemon(reconciler, tick_s=0.01, background=[service])
    stopper = threading.Timer(0.5, daemon.stopping.set)
    stopper.start()

    assert daemon.run() == 0
    stopper.cancel()
    assert len(calls) > 1  # it kept going after the first crash
    assert heard == ["InternalError"] * len(calls)  # the metrics count crashed passes
    assert service.log == ["start", "stop"]


def test_listeners_hear_every_pass_and_cannot_break_it(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, _engine = setup
    heard: list[tuple[str, float]] = []

    def broken(_outcome: PassOutcome, _duration_s: float) -> None:
        raise RuntimeError("webhook bug")

    reconciler.listeners = [broken, lambda outcome, took: heard.append((outcome.result, took))]
    source.commit(sha(1), GOOD)
    assert reconciler.sync().ok
    source.down = True
    assert reconciler.sync().result == "unavailable"

    assert [result for result, _ in heard] == ["succeeded", "unavailable"]
    assert all(took >= 0 for _, took in heard)


def test_a_state_folder_that_cannot_be_made_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = load_settings(
        {
            "RECONCILER_REPO": "git://example.invalid/x",
            "RECONCILER_STATE_DIR": str(blocker / "state"),
            "RECONCILER_PROJECT": "shop",
            "RECONCILER_ENV_FILE": "/dev/null",
        }
    )
    heard: list[str] = []
    reconciler = Reconciler(
        settings,
        source=FakeSource(tmp_path / "commits"),
        engine=FakeEngine(),
        listeners=[lambda outcome, _took: heard.append(outcome.reason)],
    )

    outcome = reconciler.sync()

    assert (outcome.result, outcome.reason) == ("unavailable", "StateUnavailable")
    assert "cannot lock" in outcome.message
    assert heard == ["StateUnavailable"]


def test_a_long_job_leaves_the_loop_passing_and_healthy_and_says_what_runs(
    setup: tuple[Reconciler, FakeSource, FakeEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: a 30-minute backup held the loop, so /healthz said unhealthy and deploys waited."""
    import threading
    import time
    from typing import Any

    from reconciler.daemon import loop as daemon_module
    from reconciler.daemon.loop import Daemon, loop_health

    reconciler, source, _engine = setup
    source.commit(sha(1), GOOD)
    passes: list[float] = []
    real_sync = reconciler.sync

    def counted_sync() -> PassOutcome:
        passes.append(time.monotonic())
        return real_sync()

    monkeypatch.setattr(reconciler, "sync", counted_sync)
    monkeypatch.setattr(daemon_module, "next_delay", lambda *_a, **_k: 0.05)
    monkeypatch.setattr(daemon_module, "SHOWN_AFTER_S", 0.1)
    release = threading.Event()
    seen: list[Any] = []

    def backups() -> None:  # the backup job, in the middle of a long backup
        release.wait(10)

    daemon = Daemon(reconciler, jobs=[backups], tick_s=0.02)
    runner = threading.Thread(target=daemon.run)
    # run() installs signal handlers, which only the main thread may do.
    monkeypatch.setattr(signal, "signal", lambda *_a: None)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(passes) < 5:
            time.sleep(0.05)
        time.sleep(0.2)
        seen.append(loop_health(reconciler.settings.state_dir, interval_s=60))
    finally:
        release.set()
        daemon.stopping.set()
        runner.join(10)
    assert len(passes) >= 5, "passes stopped while the job ran"
    health = seen[0]
    assert health.alive
    assert health.running == "backups"
    assert "backups running for" in health.message


def _built(engine: FakeEngine, tag: str, created: int) -> None:
    """As if the pass had built ``tag`` for service web (the fake engine builds nothing)."""
    from reconciler import labels as lbl
    from reconciler.decide.image_gc import ObservedImage

    engine.built_images[f"id-of:{tag}"] = ObservedImage(
        id=f"id-of:{tag}",
        tags=(tag,),
        labels={lbl.IMAGE_PROJECT: "shop", lbl.IMAGE_SERVICE: "web"},
        created=created,
    )


def deploy(reconciler: Reconciler, source: FakeSource, engine: FakeEngine, n: int) -> PassOutcome:
    _built(engine, f"img:{n}", n)
    source.commit(sha(n), GOOD.replace("img:1", f"img:{n}"))
    return reconciler.sync()


def test_a_succeeded_pass_removes_old_builds_and_a_rolled_back_one_nothing(
    setup: tuple[Reconciler, FakeSource, FakeEngine],
) -> None:
    reconciler, source, engine = setup
    _built(engine, "img:0", 0)  # an old build, before anything was recorded
    for n in (1, 2, 3):
        outcome = deploy(reconciler, source, engine, n)
        assert outcome.ok, outcome.message
    assert set(engine.built_images) == {"id-of:img:2", "id-of:img:3"}
    assert any("removed 1 unused image" in line for line in outcome.changes)

    engine.not_ready["web"] = "unhealthy"  # img:4 never gets ready: rolled back
    failed = deploy(reconciler, source, engine, 4)
    assert not failed.ok
    assert set(engine.built_images) == {"id-of:img:2", "id-of:img:3", "id-of:img:4"}

    # The next good deploy: previous is img:3 (what ran), not the failed img:4.
    del engine.not_ready["web"]
    assert deploy(reconciler, source, engine, 5).ok
    assert set(engine.built_images) == {"id-of:img:3", "id-of:img:5"}
