"""Restores by commit, end to end: git daemon, the real CLI, the engine, MariaDB and moto's S3.

Backups are taken with the backup pipeline itself (``run_backup``) on the
desired state of the committed files, the way ``reconciler backup run`` does.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler import labels
from reconciler.backup.backing_up import run_backup
from reconciler.backup.backup_target import open_target
from reconciler.backup.stored_backups import list_backups, read_manifest
from reconciler.model.backup_policy import load_backup_policy
from reconciler.model.loading import load_desired_state
from reconciler.settings import Settings, load_settings
from tests.conftest import TEST_HELPER_IMAGE
from tests.e2e.conftest import Cli, make_cli
from tests.fixtures.git_remotes import ServedRemote
from tests.fixtures.restic_planting import flip_packs
from tests.fixtures.s3_server import FAKE_KEY, FAKE_SECRET, REGION, S3Server
from tests.integration.backup_stack import POPULATE, ROOT_PASSWORD, listing, run_sql

pytestmark = pytest.mark.integration

COMPOSE = """\
services:
  web:
    image: reconciler-local/busybox:latest
    command: ["sh", "-c", "exec httpd -f -p 8080 -h /data"]
    environment:
      GREETING: "{greeting}"
    volumes: ["site:/data"]
    depends_on:
      db: {{condition: service_healthy}}
    healthcheck:
      test: ["CMD-SHELL", "pidof httpd >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 10
    stop_grace_period: 1s
  db:
    image: reconciler-local/mariadb:local
    environment:
      MARIADB_ROOT_PASSWORD: ${{DB_ROOT_PASSWORD}}
      MARIADB_DATABASE: shop
    volumes: ["dbdata:/var/lib/mysql"]
    healthcheck:
      test: ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"]
      interval: 1s
      timeout: 3s
      retries: 60
    stop_grace_period: 5s
volumes:
  site:
  dbdata:
"""

BACKUP = """\
target: ${BACKUP_TARGET}
volumes: [site]
databases: [db]
"""

ROWS = "SELECT COUNT(*) FROM shop.orders; SELECT COUNT(*) FROM shop.customers;"


def compose(greeting: str = "hello") -> str:
    return COMPOSE.format(greeting=greeting)


def restore_yaml(*requests: dict[str, Any]) -> str:
    return json.dumps({"restores": list(requests)})  # JSON is YAML


class Env:
    """One test's world: the remote, the CLI, the engine, the bucket."""

    def __init__(
        self,
        tmp_path: Path,
        remote: ServedRemote,
        client: docker.DockerClient,
        project: str,
        server: S3Server,
        bucket: str,
    ) -> None:
        self.remote = remote
        self.client = client
        self.project = project
        self.bucket = bucket
        self.tmp_path = tmp_path
        self.environ = {
            "DB_ROOT_PASSWORD": ROOT_PASSWORD,
            "BACKUP_TARGET": f"s3://{bucket}/prod",
            "AWS_ACCESS_KEY_ID": FAKE_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": server.url,
        }
        self.cli: Cli = make_cli(tmp_path, repo_url=remote.url, project=project, extra=self.environ)

    def container(self, service: str) -> Any:
        return self.client.containers.get(labels.container_name(self.project, service))

    def files(self) -> str:
        return listing(self.client, f"{self.project}_site")

    def rows(self) -> str:
        return run_sql(self.container("db"), ROWS)

    def sh(self, script: str) -> None:
        result = self.container("web").exec_run(["sh", "-c", script])
        assert result.exit_code == 0, result.output

    def backup(self, prefix: str = "prod") -> str:
        """A backup of the stack as committed, by the backup pipeline; its id."""
        root = self.remote.repo.path
        desired = load_desired_state(
            root, directory="desired-state", project=self.project, environ=self.environ
        )
        policy = load_backup_policy(
            root,
            directory="desired-state",
            desired=desired,
            environ=self.environ,
            default_target="file:///nowhere",
        )
        assert policy is not None
        result = run_backup(
            client=self.client,
            target=open_target(f"s3://{self.bucket}/{prefix}", {**os.environ, **self.environ}),
            helper_image=TEST_HELPER_IMAGE,
            desired=desired,
            policy=policy,
            state_dir=self.tmp_path / "backup-state",
            prune_after=False,
        )
        return result.manifest.id

    def restores(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.cli.status()["restores"]}


@pytest.fixture
def env(
    tmp_path: Path,
    git_daemon: ServedRemote,
    docker_client: docker.DockerClient,
    project_name: str,
    s3_env: S3Server,
    s3_bucket: str,
) -> Env:
    world = Env(tmp_path, git_daemon, docker_client, project_name, s3_env, s3_bucket)
    world.remote.commit_files(
        {
            "desired-state/compose.yaml": compose(),
            "desired-state/backup.yaml": BACKUP,
            "desired-state/restore.yaml": "restores: []\n",
        }
    )
    world.cli.run("sync", check=True)
    world.sh(POPULATE)
    run_sql(
        world.container("db"),
        "CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, item VARCHAR(64));"
        "INSERT INTO shop.orders (item) VALUES ('a'),('b'),('c'),('d'),('e');"
        "CREATE TABLE shop.customers (id INT PRIMARY KEY, name TEXT);"
        "INSERT INTO shop.customers VALUES (1,'ana'),(2,'ion');",
    )
    return world


def vandalise(env: Env) -> None:
    env.sh("rm -rf /data/html /data/uploads && echo new > /data/not-in-backup && mkdir /data/n")
    run_sql(env.container("db"), "DELETE FROM shop.orders; DROP TABLE shop.customers;")


def test_restore_by_commit_runs_once_refuses_tampering_and_reads_other_prefixes(
    env: Env,
) -> None:
    files, rows = env.files(), env.rows()
    good = env.backup()
    vandalise(env)
    vandalised = env.files()
    assert vandalised != files

    # A request is committed: the next sync restores, exactly.
    env.remote.commit_files(
        {"desired-state/restore.yaml": restore_yaml({"id": "r1", "backup": "latest"})}
    )
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "restore r1: backup " in result.stdout
    assert env.files() == files
    assert env.rows() == rows
    r1 = env.restores()["r1"]
    assert r1["state"] == "succeeded"
    assert r1["backup"] == good
    assert r1["safety_copy"] == f"s3://{env.bucket}/prod/pre-restore/r1"
    for key in ("started", "finished", "error", "safety_copy"):
        assert key in r1
    assert {c.status for c in (env.container("web"), env.container("db"))} == {"running"}

    # A second sync (and a re-applied commit) does not run it again.
    env.sh("echo after > /data/after-restore")
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "restore r1" not in result.stdout
    assert "after-restore" in env.files()
    assert env.restores()["r1"]["finished"] == r1["finished"]

    # The safety copy is a backup in the repository, under its own address only.
    environ = {**os.environ, **env.environ}
    safety = open_target(r1["safety_copy"], environ)
    assert read_manifest(safety, r1["safety_copy_backup"]).artifacts
    own = {b.id for b in list_backups(open_target(f"s3://{env.bucket}/prod", environ))}
    assert r1["safety_copy_backup"] not in own

    # A damaged repository is refused (restic authenticates every blob it
    # reads back); nothing is overwritten.
    assert flip_packs(env.bucket, "prod") > 0
    before = env.files()
    rows_before = env.rows()
    env.remote.commit_files(
        {
            "desired-state/restore.yaml": restore_yaml(
                {"id": "r1", "backup": "latest"}, {"id": "r2", "backup": good}
            )
        }
    )
    result = env.cli.run("sync")
    assert result.returncode == 1
    assert "restore r2 failed" in result.stderr
    assert "does not read back" in result.stderr, result.stderr
    assert "ciphertext verification failed" in result.stderr
    assert "nothing was overwritten" in result.stderr
    assert env.files() == before
    assert env.rows() == rows_before
    assert list_backups(open_target(f"s3://{env.bucket}/prod/pre-restore/r2", environ)) == []
    assert env.restores()["r2"]["state"] == "failed"
    # Later passes succeed; status keeps the failure.
    assert env.cli.run("sync").returncode == 0
    status = env.cli.status()
    assert status["ready"] is True
    assert {r["id"]: r["state"] for r in status["restores"]} == {"r1": "succeeded", "r2": "failed"}

    # Another environment's prefix (dev to prod), a subset: the site only.
    env.sh("echo dev > /data/dev-only.txt")
    dev_files = env.files()
    # The developer's PC flow: back up under a dev/ prefix with the CLI.
    env.cli.run("backup", "run", "--target", f"s3://{env.bucket}/dev", check=True)
    env.sh("rm /data/dev-only.txt")
    run_sql(env.container("db"), "INSERT INTO shop.orders (item) VALUES ('prod-only');")
    prod_rows = env.rows()
    env.remote.commit_files(
        {
            "desired-state/restore.yaml": restore_yaml(
                {"id": "r1"},
                {"id": "r2", "backup": good},
                {
                    "id": "from-dev",
                    "source": f"s3://{env.bucket}/dev",
                    "volumes": ["site"],
                    "databases": [],
                },
            )
        }
    )
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    assert env.files() == dev_files
    assert env.rows() == prod_rows  # databases: [] left the database alone
    assert env.restores()["from-dev"]["source"] == f"s3://{env.bucket}/dev"


def test_a_malformed_restore_yaml_runs_nothing_but_the_commit_applies(env: Env) -> None:
    env.backup()
    files = env.files()
    env.remote.commit_files(
        {
            "desired-state/compose.yaml": compose("bonjour"),
            "desired-state/restore.yaml": (
                "restores:\n  - id: a\n    volumes: [sitee]\n  - id: a\n    source: ftp://x/y\n"
            ),
        }
    )
    result = env.cli.run("sync")
    assert result.returncode == 1
    assert (
        "desired-state/restore.yaml:3: restores[0].volumes[0]: unknown volume 'sitee' "
        "(did you mean 'site'?)" in result.stderr
    )
    assert "desired-state/restore.yaml:5: restores[1].source" in result.stderr
    assert "GREETING=bonjour" in env.container("web").attrs["Config"]["Env"]
    assert env.files() == files
    assert env.cli.status()["restores"] == []
    assert env.cli.run("validate", str(env.remote.repo.path / "desired-state")).returncode == 1


def test_sigkill_mid_restore_leaves_it_interrupted_and_the_safety_copy_usable(env: Env) -> None:
    # Enough data that the restore takes a few seconds to write.
    env.sh("head -c 150000000 /dev/urandom > /data/big.bin")
    env.backup()
    env.sh("rm /data/big.bin && echo changed-after-backup > /data/later.txt")
    before = env.files()
    rows_before = env.rows()
    env.remote.commit_files(
        {"desired-state/restore.yaml": restore_yaml({"id": "killed", "backup": "latest"})}
    )
    ledger = env.tmp_path / "state" / "restores.json"
    proc = env.cli.popen("sync")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            entry = _ledger_entry(ledger, "killed")
            if entry and any(step.startswith("replacing volume") for step in entry.get("done", [])):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("the restore never reached the volume")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    shown = env.restores()["killed"]
    assert shown["state"] == "interrupted"
    safety = shown["safety_copy"]
    assert safety == f"s3://{env.bucket}/prod/pre-restore/killed"

    # The next pass records it, never runs it again, and puts the stopped service back.
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    record = env.restores()["killed"]
    assert record["state"] == "interrupted"
    assert "new id" in record["hint"]
    assert env.container("web").status == "running"

    # The safety copy puts back what was there before the restore began.
    result = env.cli.run("restore", "latest", "--source", safety, "--yes")
    assert result.returncode == 0, result.stderr[-3000:]
    assert env.files() == before
    assert env.rows() == rows_before
    manual = [r for r in env.cli.status()["restores"] if r["id"].startswith("manual-")]
    assert [r["state"] for r in manual] == ["succeeded"]
    # What the killed process left (its helper containers) is gone too.
    helpers = env.client.api.containers(
        all=True, filters={"label": [f"{labels.PROJECT}={env.project}", labels.HELPER]}
    )
    assert [h["Names"] for h in helpers] == []
    staging = env.client.api.volumes(
        filters={"label": [f"{labels.PROJECT}={env.project}", labels.HELPER]}
    )
    assert [v["Name"] for v in staging.get("Volumes") or []] == []


def test_the_drill_passes_then_detects_a_corrupted_backup(env: Env) -> None:
    good = env.backup()
    result = env.cli.run("restore", "--drill", "--json")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    drill = env.cli.status()["drill"]
    assert drill["result"] == "ok"
    assert drill["backup"] == good
    assert drill["volumes"]["site"]["files"] >= 5
    assert drill["databases"]["db"]["databases"]["shop"] == 2

    assert flip_packs(env.bucket, "prod") > 0
    result = env.cli.run("restore", "--drill")
    assert result.returncode == 1
    drill = env.cli.status()["drill"]
    assert drill["result"] == "failed"
    assert "does not read back" in drill["error"], drill["error"]
    assert "ciphertext verification failed" in drill["error"]
    # Scratch objects are gone.
    leftovers = [
        v.name for v in env.client.volumes.list() if v.name.startswith(f"{env.project}-drill-")
    ]
    assert leftovers == []
    assert not env.client.containers.list(all=True, filters={"name": f"{env.project}-drill-"})
    # The metrics read the same state: both drills counted; a backup by the
    # CLI (which records its status) with its size.
    env.cli.run("backup", "run", check=True)
    samples = scrape_state(load_settings(env.cli.env))
    assert drill["counts"] == {"ok": 1, "failed": 1}
    assert samples[("reconciler_restore_drills_total", (("result", "ok"),))] == 1
    assert samples[("reconciler_restore_drills_total", (("result", "failed"),))] == 1
    assert samples[("reconciler_restore_drill_last_success", ())] == 0
    last = env.cli.status()["backup"]["last"]
    assert last["result"] == "ok"
    assert last["size"] > 0
    assert samples[("reconciler_backup_last_success_size_bytes", ())] == last["size"]
    assert samples[("reconciler_backup_last_attempt_success", ())] == 1


def scrape_state(settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from reconciler.daemon.metrics import make_registry

    text = generate_latest(make_registry(settings)[0]).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _ledger_entry(path: Path, ident: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return next((r for r in data.get("restores", []) if r["id"] == ident), None)


def test_a_corrupt_ledger_fails_the_sync_and_a_finished_request_never_runs_again(
    env: Env,
) -> None:
    env.backup()
    env.remote.commit_files(
        {"desired-state/restore.yaml": restore_yaml({"id": "r1", "backup": "latest"})}
    )
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    ledger = env.tmp_path / "state" / "restores.json"
    assert json.loads(ledger.read_text())["restores"][0]["state"] == "succeeded"
    # The previous copy from when r1 was queued (pending), then a torn file.
    queued = json.loads(ledger.read_text())
    queued["restores"][0].update(state="pending", started=None, finished=None, done=[])
    ledger.with_name("restores.json.prev").write_text(json.dumps(queued))
    ledger.write_text('{"restores": [{"id": "r1", "sta')
    env.sh("echo after > /data/after-restore")

    result = env.cli.run("sync")
    assert result.returncode == 1
    assert f"the restore ledger {ledger} is corrupt" in result.stderr
    assert "no restore request runs until it is fixed" in result.stderr
    assert "restore r1" not in result.stdout
    assert "after-restore" in env.files()  # r1 did not run again
    assert ledger.read_text() == '{"restores": [{"id": "r1", "sta'  # left for the user
    status = env.cli.status()
    assert status["restores"][0]["state"] == "unknown"
    assert str(ledger) in status["restores"][0]["error"]
    # Still refused on the next pass: nothing guesses.
    assert env.cli.run("sync").returncode == 1
    assert "after-restore" in env.files()


def test_a_partial_restore_by_commit_and_by_hand(env: Env) -> None:
    """Issue 10 item 6: ``paths:`` and ``--path`` bring back only those files and folders."""
    env.backup()
    env.sh("echo changed > /data/html/index.php && rm -rf /data/uploads && echo mine > /data/keep")
    rows = env.rows()
    env.remote.commit_files(
        {
            "desired-state/restore.yaml": restore_yaml(
                {
                    "id": "uploads-only",
                    "backup": "latest",
                    "volumes": ["site"],
                    "paths": ["uploads"],
                }
            )
        }
    )
    result = env.cli.run("sync")
    assert result.returncode == 0, result.stderr[-3000:]
    record = env.restores()["uploads-only"]
    assert record["state"] == "succeeded", record
    assert record["paths"] == ["uploads"]
    files = env.files()
    assert "./uploads/2026/11/photo.jpg" in files
    assert "./keep " in files  # the rest of the volume is as it was
    assert env.rows() == rows

    result = env.cli.run(
        "restore", "latest", "--volumes", "site", "--path", "html/index.php", "--yes"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    index = env.container("web").exec_run(["cat", "/data/html/index.php"]).output
    assert b"changed" not in index
    assert "./keep " in env.files()

    result = env.cli.run("restore", "latest", "--volumes", "site", "--path", "../etc", "--yes")
    assert result.returncode == 1
    assert "'..' and NUL are not allowed" in result.stderr
