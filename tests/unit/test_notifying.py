"""Notifications through the real pass, backup, restore and drill code; HTTP via ``responses``.

``responses`` stands in for the third-party services only (chat webhooks,
GitHub/Gitea/Bitbucket, healthchecks); the pass runs over the in-memory engine
and source of test_passes.py.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from reconciler import notifying
from reconciler.adapters import notifiers
from reconciler.backup import backup_status
from reconciler.backup.backup_jobs import BackupContext, backup_job, backup_now
from reconciler.decide.notifications import forge_of
from reconciler.deploy.passes import Reconciler
from reconciler.model.backup_policy import BackupPolicy, Schedule
from reconciler.model.desired import DesiredState
from reconciler.restore.restore_hook import restore_hook
from reconciler.settings import Settings, load_settings
from reconciler.state.status import Status, StatusStore
from tests.fixtures.fake_engine import FakeEngine
from tests.unit.test_passes import GOOD, FakeSource, sha

HOOK = "https://hooks.example.com/generic/t0ps3cret"
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXslacksecret"
PING = "https://hc-ping.com/5f1e-uuid-secret"
TOKEN = "ghp_notavalidtokenbutsecret"
BROKEN = GOOD.replace("image: img:1", "image: img:1\n    imagee: typo")


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notifiers, "RETRY_PAUSE_S", 0.0)


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def make_settings(tmp_path: Path, **extra: str) -> Settings:
    return load_settings(
        {
            "RECONCILER_REPO": "git@github.com:acme/shop.git",
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_PROJECT": "shop",
            "RECONCILER_ENV_FILE": "/dev/null",
            **extra,
        }
    )


def make_pass(settings: Settings, tmp_path: Path) -> tuple[Reconciler, FakeSource]:
    source = FakeSource(tmp_path / "commits")
    notifier = notifying.Notifier.from_settings(settings)
    reconciler = Reconciler(
        settings,
        source=source,
        engine=FakeEngine(),
        listeners=[notifying.pass_listener(settings, notifier=notifier)],
        before_apply=[notifying.pending_hook(settings, notifier=notifier)],
        own_container=None,
    )
    return reconciler, source


def bodies(mock: responses.RequestsMock, url: str) -> list[Any]:
    return [json.loads(c.request.body or b"{}") for c in mock.calls if c.request.url == url]


def events(mock: responses.RequestsMock, url: str) -> list[str]:
    return [body["event"] for body in bodies(mock, url)]


# -- the pass: deduplication and recovery ------------------------------------------------------


def test_identical_failures_are_sent_once_then_one_recovery_then_a_new_failure(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(HOOK, status=200)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), BROKEN)

    assert reconciler.sync().result == "stalled"
    assert reconciler.sync().result == "stalled"  # the same failure: quiet
    assert events(http, HOOK) == ["pass.failed"]

    source.commit(sha(2), GOOD)
    assert reconciler.sync().ok
    assert reconciler.sync().ok  # still fine: quiet
    assert events(http, HOOK) == ["pass.failed", "pass.recovered"]

    source.commit(sha(3), BROKEN)
    reconciler.sync()
    assert events(http, HOOK) == ["pass.failed", "pass.recovered", "pass.failed"]

    first = bodies(http, HOOK)[0]
    assert set(first) == {"event", "severity", "project", "commit", "message", "time", "details"}
    assert (first["severity"], first["project"], first["commit"]) == ("error", "shop", sha(1))
    assert "imagee" in first["message"]
    assert first["details"]["result"] == "stalled"
    assert first["details"]["reason"] == "ValidationFailed"
    assert datetime.fromisoformat(first["time"]).tzinfo is not None


def test_dedupe_survives_a_restart(tmp_path: Path, http: responses.RequestsMock) -> None:
    http.post(HOOK, status=200)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), BROKEN)
    reconciler.sync()
    again, _ = make_pass(settings, tmp_path)  # a new process: only the state folder is shared
    again.source = source
    again.sync()
    assert events(http, HOOK) == ["pass.failed"]


def test_slack_gets_text_and_the_secret_url_never_reaches_a_log(
    tmp_path: Path, http: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    http.post(SLACK, status=500)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_SLACK_URL=SLACK)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), BROKEN)
    with caplog.at_level(logging.DEBUG, logger="reconciler"):
        outcome = reconciler.sync()
    assert outcome.result == "stalled"  # the channel's 500 changed nothing
    assert len(http.calls) == 2  # tried twice
    body = bodies(http, SLACK)[0]
    assert set(body) == {"text"}
    assert f"*shop*: pass.failed at `{sha(1)[:12]}`" in body["text"]
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'event_fields', '')}" for r in caplog.records)
    assert "notify.failed" in logged
    assert "https://hooks.slack.com" in logged
    assert "slacksecret" not in logged
    assert "/services/" not in logged

    # Nothing was recorded as sent: the next pass tries again, and succeeds.
    http.replace(responses.POST, SLACK, status=200)
    reconciler.sync()
    assert len(http.calls) == 3
    reconciler.sync()
    assert len(http.calls) == 3


def test_a_receiver_that_times_out_does_not_fail_the_pass(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(HOOK, body=requests.exceptions.ReadTimeout("read timed out"))
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), GOOD)
    source.down = True
    outcome = reconciler.sync()
    assert outcome.result == "unavailable"
    assert len(http.calls) == 2  # one retry, no more
    source.down = False
    assert reconciler.sync().ok


def test_messages_are_redacted(tmp_path: Path, http: responses.RequestsMock) -> None:
    http.post(HOOK, status=200)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)
    reconciler, source = make_pass(settings, tmp_path)

    def down() -> str:
        from reconciler.errors import Unavailable

        raise Unavailable("git: cannot reach https://oauth2:hunter2tok@git.example.com/a/b")

    source.remote_head = down  # type: ignore[method-assign]
    reconciler.sync()
    sent = http.calls[0].request.body or b""
    assert b"hunter2tok" not in sent
    assert b"git.example.com" in sent


# -- commit statuses ------------------------------------------------------------------------------


GITHUB_STATUS = "https://api.github.com/repos/acme/shop/statuses/"


def test_github_pending_then_success_for_an_applied_commit_and_failure_for_a_stalled_one(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(GITHUB_STATUS + sha(1), status=201)
    http.post(GITHUB_STATUS + sha(2), status=201)
    settings = make_settings(tmp_path, RECONCILER_COMMIT_STATUS_TOKEN=TOKEN)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), GOOD)
    assert reconciler.sync().ok
    assert reconciler.sync().ok  # the same commit again: no new status
    assert [b["state"] for b in bodies(http, GITHUB_STATUS + sha(1))] == ["pending", "success"]
    call = http.calls[0].request
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.headers["Accept"] == "application/vnd.github+json"
    assert call.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert bodies(http, GITHUB_STATUS + sha(1))[1] == {
        "state": "success",
        "context": "reconciler/shop",
        "description": "applied",
    }

    source.commit(sha(2), BROKEN)
    assert reconciler.sync().result == "stalled"
    reconciler.sync()
    stalled = bodies(http, GITHUB_STATUS + sha(2))
    assert [b["state"] for b in stalled] == ["failure"]  # never applied: no pending
    assert stalled[0]["description"].startswith("ValidationFailed: ")
    assert len(stalled[0]["description"]) <= 140
    for c in http.calls:
        assert TOKEN.encode() not in (c.request.body or b"")


def test_gitea_payload_and_auth(http: responses.RequestsMock) -> None:
    url = "https://gitea.example.com/api/v1/repos/acme/shop/statuses/" + sha(7)
    http.post(url, status=201)
    client = notifiers.CommitStatusClient(
        forge_of("ssh://git@gitea.example.com:2222/acme/shop.git"), "tok123", "reconciler"
    )
    assert client.set(sha(7), "failure", "ApplyFailed: boom")
    request = http.calls[0].request
    assert request.headers["Authorization"] == "token tok123"
    assert json.loads(request.body or b"") == {
        "state": "failure",
        "context": "reconciler",
        "description": "ApplyFailed: boom",
    }


@pytest.mark.parametrize(
    ("token", "authorization"),
    [
        ("bbtoken", "Bearer bbtoken"),
        ("jdoe:app-pass", "Basic " + base64.b64encode(b"jdoe:app-pass").decode()),
    ],
)
def test_bitbucket_payload_and_auth(
    http: responses.RequestsMock, token: str, authorization: str
) -> None:
    url = f"https://api.bitbucket.org/2.0/repositories/team/shop/commit/{sha(8)}/statuses/build"
    http.post(url, status=201)
    client = notifiers.CommitStatusClient(forge_of("git@bitbucket.org:team/shop.git"), token)
    for state in ("pending", "success", "failure"):
        assert client.set(sha(8), state, "x")
    sent = bodies(http, url)
    assert [b["state"] for b in sent] == ["INPROGRESS", "SUCCESSFUL", "FAILED"]
    assert sent[0] == {
        "key": "reconciler",
        "state": "INPROGRESS",
        "name": "reconciler",
        "url": f"https://bitbucket.org/team/shop/commits/{sha(8)}",
        "description": "x",
    }
    assert http.calls[0].request.headers["Authorization"] == authorization


def test_a_forge_that_answers_500_does_not_fail_the_pass_and_is_retried_later(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(GITHUB_STATUS + sha(1), status=502)
    settings = make_settings(tmp_path, RECONCILER_COMMIT_STATUS_TOKEN=TOKEN)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), GOOD)
    assert reconciler.sync().ok
    assert len(http.calls) == 4  # pending and success, each tried twice
    http.replace(responses.POST, GITHUB_STATUS + sha(1), status=201)
    reconciler.sync()
    assert [b["state"] for b in bodies(http, GITHUB_STATUS + sha(1))][-1] == "success"
    count = len(http.calls)
    reconciler.sync()
    assert len(http.calls) == count


def test_a_local_repository_turns_commit_statuses_off_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        tmp_path, RECONCILER_REPO=f"{tmp_path}/shop", RECONCILER_COMMIT_STATUS_TOKEN=TOKEN
    )
    with caplog.at_level(logging.INFO, logger="reconciler"):
        notifier = notifying.Notifier.from_settings(settings)
    assert notifier.commit_status is None
    assert "notify.commit_status_off" in caplog.text


# -- backups, restores, drills ---------------------------------------------------------------


def backup_context(settings: Settings, client_factory: Any) -> BackupContext:
    return BackupContext(
        settings=settings,
        desired=DesiredState(project="shop", services={}, networks={}, volumes={}),
        policy=BackupPolicy(
            target=f"file://{settings.state_dir}/b", schedule=Schedule(at="05:04", timezone="UTC")
        ),
        commit=sha(1),
        client_factory=client_factory,
    )


def test_a_failed_backup_pings_start_and_fail_and_tells_the_webhook_once(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(PING + "/start", status=200)
    http.post(PING + "/fail", status=200)
    http.post(HOOK, status=200)
    settings = make_settings(
        tmp_path, RECONCILER_BACKUP_PING_URL=PING, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK
    )

    def no_engine() -> Any:
        raise RuntimeError("Docker is not running")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            backup_now(backup_context(settings, no_engine))
    pings = [c.request.url for c in http.calls if (c.request.url or "").startswith(PING)]
    assert pings == [PING + "/start", PING + "/fail"] * 2  # the ping hears every attempt
    fail_body = next(c.request.body for c in http.calls if c.request.url == PING + "/fail")
    assert b"Docker is not running" in (fail_body or b"")
    assert events(http, HOOK) == ["backup.failed"]  # the webhook hears it once


def test_a_backup_success_pings_and_recovers(tmp_path: Path, http: responses.RequestsMock) -> None:
    http.post(PING, status=200)
    http.post(HOOK, status=200)
    settings = make_settings(
        tmp_path, RECONCILER_BACKUP_PING_URL=PING, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK
    )
    notifying.backup_finished(settings, ok=False, message="S3 said 503", commit=sha(1))
    notifying.backup_finished(settings, ok=True, message="backup x: 10 bytes", commit=sha(1))
    notifying.backup_finished(settings, ok=True, message="backup y: 10 bytes", commit=sha(1))
    assert events(http, HOOK) == ["backup.failed", "backup.recovered"]
    assert [c.request.body for c in http.calls if c.request.url == PING] == [
        b"backup x: 10 bytes",
        b"backup y: 10 bytes",
    ]


def test_a_missed_backup_is_sent_once_by_the_daemon_job(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(HOOK, status=200)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)
    store = StatusStore(settings.state_dir)
    store.save(Status(applied_commit=sha(1)))
    started = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
    backup_status.record(
        settings.state_dir,
        backup_status.BackupStatus(time=started.isoformat(), result="ok", id="x", size=1),
    )
    now = [started + timedelta(hours=1)]
    job = backup_job(
        settings,
        loader=lambda s: backup_context(s, lambda: None),
        run=lambda _c: None,  # the backup never succeeds (hung, or the job never ran)
        clock=lambda: now[0],
    )
    job()
    assert events(http, HOOK) == []
    now[0] = started + timedelta(hours=27)
    job()
    job()
    assert events(http, HOOK) == ["backup_missed.failed"]
    assert "no backup has succeeded since 2026-11-27T04:00" in bodies(http, HOOK)[0]["message"]


def test_a_failed_restore_request_is_sent_with_the_failed_pass(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(HOOK, status=200)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)

    class Client:
        def close(self) -> None:
            pass

    source = FakeSource(tmp_path / "commits")
    reconciler = Reconciler(
        settings,
        source=source,
        engine=FakeEngine(),
        after_apply=[restore_hook(settings, client_factory=Client)],
        listeners=[notifying.pass_listener(settings)],
        own_container=None,
    )
    source.commit(sha(50), GOOD)
    assert reconciler.sync().ok  # the VM's first pass
    commit = source.commit(sha(5), GOOD)
    (tmp_path / "commits" / commit / "desired-state" / "restore.yaml").write_text(
        "restores:\n  - id: oops\n"
    )
    assert reconciler.sync().result == "failed"  # there is no backup to restore
    reconciler.sync()  # the request is done (failed): the next pass succeeds
    assert events(http, HOOK) == ["restore.failed", "pass.failed", "pass.recovered"]
    restore = bodies(http, HOOK)[0]
    assert restore["details"]["id"] == "oops"
    assert restore["commit"] == commit


def test_drill_results(tmp_path: Path, http: responses.RequestsMock) -> None:
    http.post(HOOK, status=200)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)
    failed = {"result": "failed", "backup": "b1", "error": "sha256 differs"}
    notifying.drill_finished(settings, failed, commit=sha(1))
    notifying.drill_finished(settings, failed, commit=sha(1))
    notifying.drill_finished(settings, {"result": "ok", "backup": "b2"}, commit=sha(1))
    assert events(http, HOOK) == ["drill.failed", "drill.succeeded"]


def test_nothing_configured_writes_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), BROKEN)
    reconciler.sync()
    assert not (settings.state_dir / notifying.STATE_FILE).exists()


def test_secrets_stay_out_of_settings_repr(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        RECONCILER_NOTIFY_SLACK_URL=SLACK,
        RECONCILER_COMMIT_STATUS_TOKEN=TOKEN,
        RECONCILER_BACKUP_PING_URL=PING,
    )
    text = repr(settings)
    assert "slacksecret" not in text
    assert TOKEN not in text
    assert "uuid-secret" not in text


def test_a_state_folder_that_cannot_be_written_still_sends_once(
    tmp_path: Path, http: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.errors import StateError

    http.post(HOOK, status=200)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), BROKEN)

    def full(path: Path, _data: object) -> None:
        raise StateError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(notifying, "atomic_write_json", full)
    reconciler.sync()
    reconciler.sync()
    assert events(http, HOOK) == ["pass.failed"]  # remembered in memory meanwhile
    monkeypatch.undo()
    reconciler.sync()
    assert events(http, HOOK) == ["pass.failed"]


# -- the plan on the commit (issue 14 item 5) ---------------------------------------------------


def test_pending_carries_the_plan_before_anything_is_applied_then_success(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    settings = make_settings(tmp_path, RECONCILER_COMMIT_STATUS_TOKEN=TOKEN)
    reconciler, source = make_pass(settings, tmp_path)
    engine = reconciler.engine
    assert isinstance(engine, FakeEngine)
    seen: list[list[str]] = []

    def record(request: Any) -> tuple[int, dict[str, str], str]:
        # What ran when the forge was told: nothing new may run before "pending".
        seen.append([c.name for c in engine.observe("shop").containers])
        return 201, {}, "{}"

    http.add_callback(responses.POST, GITHUB_STATUS + sha(1), callback=record)
    http.add_callback(responses.POST, GITHUB_STATUS + sha(2), callback=record)
    source.commit(sha(1), GOOD)
    assert reconciler.sync().ok
    first = bodies(http, GITHUB_STATUS + sha(1))
    assert [b["state"] for b in first] == ["pending", "success"]
    assert first[0]["description"] == "2 to create: network shop_default, web"
    assert seen[0] == []  # pending went out before the apply

    source.commit(sha(2), GOOD.replace("VERSION_VALUE", "VERSION_TWO"))
    assert reconciler.sync().ok
    second = bodies(http, GITHUB_STATUS + sha(2))
    assert [b["state"] for b in second] == ["pending", "success"]
    assert second[0]["description"] == "1 to recreate: web (environment.VERSION)"
    assert seen[2] == ["shop-web-1"]  # the old container still ran at "pending"
    for body in (*first, *second):
        assert "VERSION_VALUE" not in body["description"]
        assert "VERSION_TWO" not in body["description"]


def test_a_long_plan_is_shortened_to_whole_words_within_140_characters(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(GITHUB_STATUS + sha(1), status=201)
    http.post(GITHUB_STATUS + sha(2), status=201)
    many = "services:\n" + "".join(
        f"  service-with-a-long-name-{n}:\n    image: img:1\n"
        f"    environment: {{VARIABLE_WITH_A_LONG_NAME_{n}: x}}\n"
        for n in range(8)
    )
    settings = make_settings(tmp_path, RECONCILER_COMMIT_STATUS_TOKEN=TOKEN)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), many)
    assert reconciler.sync().ok
    source.commit(sha(2), many.replace(": x}", ": y}"))
    assert reconciler.sync().ok

    created = bodies(http, GITHUB_STATUS + sha(1))[0]["description"]
    recreated = bodies(http, GITHUB_STATUS + sha(2))[0]["description"]
    # Too long with every reason and name: the reasons go first, then the names.
    assert created == "9 to create"
    assert recreated == "8 to recreate"


def test_a_secret_value_never_reaches_the_commit_status(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    from reconciler.redaction import forget_secrets
    from reconciler.secret_keys import keygen, recipient_of
    from tests.fixtures.sops_encoder import sops_dotenv

    http.post(GITHUB_STATUS + sha(1), status=201)
    http.post(GITHUB_STATUS + sha(2), status=201)
    key = tmp_path / "vm" / "age.key"
    keygen(key)
    to = recipient_of(key)[0]
    settings = make_settings(
        tmp_path, RECONCILER_COMMIT_STATUS_TOKEN=TOKEN, RECONCILER_AGE_KEY_FILE=str(key)
    )
    reconciler, source = make_pass(settings, tmp_path)
    compose = "services:\n  web:\n    image: img:1\n    env_file: [app.sops.env]\n"
    try:
        for n, secret in ((1, "first-api-token-value"), (2, "second-api-token-value")):
            source.commit(sha(n), compose)
            (tmp_path / "commits" / sha(n) / "desired-state" / "app.sops.env").write_text(
                sops_dotenv({"API_TOKEN": secret}, to)
            )
            assert reconciler.sync().ok
        pending = bodies(http, GITHUB_STATUS + sha(2))[0]["description"]
        assert pending == "1 to recreate: web (environment.API_TOKEN, app.sops.env)"
        for call in http.calls:
            body = call.request.body or b""
            assert b"api-token-value" not in body
    finally:
        forget_secrets()


def test_a_failed_recreate_tells_the_webhook_why_it_was_recreated(
    tmp_path: Path, http: responses.RequestsMock
) -> None:
    http.post(HOOK, status=200)
    settings = make_settings(tmp_path, RECONCILER_NOTIFY_WEBHOOK_URL=HOOK)
    reconciler, source = make_pass(settings, tmp_path)
    source.commit(sha(1), GOOD)
    assert reconciler.sync().ok
    source.commit(sha(2), GOOD.replace("VERSION_VALUE", "VERSION_TWO"))
    engine = reconciler.engine
    assert isinstance(engine, FakeEngine)
    engine.fail_for[("run_container", "web")] = RuntimeError("no space left")
    assert reconciler.sync().result == "failed"

    (failed,) = bodies(http, HOOK)
    assert failed["details"]["plan"] == ["recreate service web: environment.VERSION changed"]
    assert "VERSION_TWO" not in json.dumps(failed)
