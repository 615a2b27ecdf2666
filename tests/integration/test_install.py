"""install.sh, end to end: a Debian container with the host's Docker socket runs it.

The installer runs in a container of the locally built Debian image (its
package-install step is skipped: the engine answers through the socket), from
a copy of this repository. The reconciler follows a real git remote: ``git
daemon`` serving a bare repository on the host's address on the docker0
bridge, a host-only interface that containers reach (they cannot reach the
host's 127.0.0.1). Every path the reconciler bind-mounts (state, config) lives
in one folder that is mounted at the same path into the installer, as on a VM.

The tests share one installation and run in file order: install, a second run
that changes nothing, a push that deploys, a push that replaces the reconciler
itself, and ``--uninstall`` last.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
import yaml

from reconciler import labels
from tests.fixtures import tools
from tests.fixtures.docker_engine import remove_project
from tests.fixtures.git_remotes import SshRemote

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INSTALLER_IMAGE = "reconciler-local/debian:bookworm"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def copy_repository(target: Path) -> None:
    """The repository's tracked files as they are in the working tree, and the wheelhouse."""
    files = git("ls-files", "-z", cwd=ROOT).split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    # The host's pip fills the wheelhouse: pip in a container may reach no index.
    result = subprocess.run(
        ["sh", str(target / "images/reconciler/wheelhouse.sh"), sys.executable],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"wheelhouse.sh failed:\n{result.stderr[-4000:]}"


@dataclass
class Installation:
    root: Path
    checkout: Path  # where install.sh runs from (a copy of this repository)
    remote: Path  # the bare repository, served by git daemon
    url: str  # git://GATEWAY:PORT/remote.git, what the reconciler follows
    work: Path  # a clone to push from
    config_dir: Path
    state_dir: Path
    project: str
    image_name: str
    http_port: int
    client: docker.DockerClient
    # The VM side of the reconciler's /metrics and /healthz (127.0.0.1 only).
    metrics_port: int = field(default_factory=lambda: free_port())
    # Anonymous volumes of the project's containers (the image's VOLUME, when
    # the state dir is elsewhere): removed at the end, as nothing else would.
    anonymous_volumes: set[str] = field(default_factory=set)

    def note_anonymous_volumes(self) -> None:
        selector = {"label": f"{labels.PROJECT}={self.project}"}
        for summary in self.client.api.containers(all=True, filters=selector):
            for mount in summary.get("Mounts") or []:
                name = str(mount.get("Name") or "")
                if mount.get("Type") == "volume" and re.fullmatch(r"[0-9a-f]{64}", name):
                    self.anonymous_volumes.add(name)

    @property
    def daemon(self) -> str:
        return f"{self.project}-reconciler-1"

    @property
    def log(self) -> Path:
        """The install log (--log), where the tools' output goes instead of the screen."""
        return self.root / "install.log"

    def install(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        docker_cli = shutil.which("docker")
        assert docker_cli, "the docker CLI is needed on the host"
        command = [
            "docker",
            "run",
            "--rm",
            "--label",
            "dev.reconciler.test=install",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            # The host's CLI (static, or linked against the same Debian libc).
            "-v",
            f"{os.path.realpath(docker_cli)}:/usr/local/bin/docker:ro",
            "-v",
            f"{self.root}:{self.root}",
            INSTALLER_IMAGE,
            "sh",
            str(self.checkout / "install.sh"),
            "--config-dir",
            str(self.config_dir),
            "--state-dir",
            str(self.state_dir),
            "--log",
            str(self.log),
            "--bin-dir",
            str(self.root / "bin"),
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def first_install(self) -> subprocess.CompletedProcess[str]:
        return self.install(
            "--yes",
            "--repo",
            self.url,
            "--project",
            self.project,
            "--backup-target",
            f"file://{self.state_dir}/backups",
            "--local-images",
            "--image-name",
            self.image_name,
            "--set",
            f"HTTP_PORT={self.http_port}",
            "--set",
            f"HTTPS_PORT={free_port()}",
            "--set",
            f"RECONCILER_METRICS_PORT={self.metrics_port}",
            "--set",
            "RECONCILER_INTERVAL=5",
            "--timeout",
            "300",
        )

    def push(self, message: str, edit: dict[str, str]) -> str:
        for name, content in edit.items():
            (self.work / name).write_text(content, encoding="utf-8")
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def container(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.api.inspect_container(name))
        except docker.errors.NotFound:
            return None

    def status(self) -> dict[str, Any]:
        run = self.client.api.exec_create(self.daemon, ["reconciler", "status", "--json"])
        return dict(json.loads(self.client.api.exec_start(run["Id"]).decode()))


def state_of(attrs: dict[str, Any] | None) -> str:
    if attrs is None:
        return "missing"
    health = attrs["State"].get("Health") or {}
    return str(health.get("Status") or attrs["State"]["Status"])


def wait_until(what: str, check: Callable[[], bool], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(1)


def remove_tags(client: docker.DockerClient, image_name: str, *prefixes: str) -> None:
    """Untag what the installation built. By tag, not id: a build with the same
    inputs elsewhere (tests/integration/test_images.py) may share the image."""
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith((f"{image_name}:", *prefixes)):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)


def docker0_gateway(client: docker.DockerClient) -> str:
    """The host's address on Docker's default bridge (docker0)."""
    for config in client.api.inspect_network("bridge")["IPAM"]["Config"] or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
        if config.get("Subnet"):
            # Docker gives the bridge the first address of its subnet.
            network = ipaddress.ip_network(config["Subnet"])
            if network.version == 4:
                return str(next(network.hosts()))
    pytest.fail("Docker's default bridge network has no IPv4 address", pytrace=False)


@contextlib.contextmanager
def git_daemon(base: Path, address: str) -> Iterator[int]:
    """``git daemon`` serving ``base`` on ``address``; the port, retried on a clash."""
    for _attempt in range(5):
        with socket.socket() as probe:
            probe.bind((address, 0))
            port = int(probe.getsockname()[1])
        process = subprocess.Popen(
            [
                *("git", "daemon", "--reuseaddr", "--export-all", "--informative-errors"),
                *(f"--listen={address}", f"--port={port}", f"--base-path={base}", str(base)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex((address, port)) == 0:
                    break
            time.sleep(0.1)
        if process.poll() is None:
            try:
                yield port
            finally:
                process.terminate()
                process.wait(timeout=10)
            return
    pytest.fail(f"git daemon could not listen on {address}", pytrace=False)


@pytest.fixture(scope="module")
def installation(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    for image, only in ((INSTALLER_IMAGE, "debian"), ("reconciler-local/python:local", "python")):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(
                f"image {image} is missing: run images/local/build-base-images.sh --only {only}",
                pytrace=False,
            )
    root = tmp_path_factory.mktemp("install")
    checkout = root / "checkout"
    checkout.mkdir()
    copy_repository(checkout)
    source = root / "source"
    shutil.copytree(checkout, source, ignore=shutil.ignore_patterns("*.whl"))
    git("init", "-q", "-b", "main", cwd=source)
    git("add", "-A", cwd=source)
    git("commit", "-q", "-m", "the project's default stack", cwd=source)
    remote = root / "remote.git"
    git("clone", "-q", "--bare", str(source), str(remote), cwd=root)
    git("remote", "add", "origin", str(remote), cwd=source)
    gateway = docker0_gateway(docker_client)
    with git_daemon(root, gateway) as port:
        installation = Installation(
            root=root,
            checkout=checkout,
            remote=remote,
            url=f"git://{gateway}:{port}/remote.git",
            work=source,
            config_dir=root / "etc",
            state_dir=root / "state",
            project="it" + secrets.token_hex(4),
            image_name="reconciler-it-" + secrets.token_hex(4),
            http_port=free_port(),
            client=docker_client,
        )
        try:
            yield installation
        finally:
            installation.note_anonymous_volumes()
            remove_project(docker_client, installation.project)
            for name in installation.anonymous_volumes:
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.api.remove_volume(name)
            remove_tags(docker_client, installation.image_name, f"{installation.project}-")


@pytest.fixture(scope="module")
def installed(installation: Installation) -> subprocess.CompletedProcess[str]:
    result = installation.first_install()
    installation.note_anonymous_volumes()
    if result.returncode != 0:
        pytest.fail(
            f"install.sh exited {result.returncode}:\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-6000:]}",
            pytrace=False,
        )
    return result


def test_install_deploys_the_stack_from_the_git_remote(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    head = git("rev-parse", "HEAD", cwd=installation.work)
    for service in ("db", "webserver", "reconciler"):
        attrs = installation.container(f"{installation.project}-{service}-1")
        assert state_of(attrs) == "healthy", f"{service}: {state_of(attrs)}"
        assert attrs is not None
        assert attrs["Config"]["Labels"][labels.COMMIT] == head
    restart = installation.client.api.inspect_container(installation.daemon)["HostConfig"]
    assert restart["RestartPolicy"]["Name"] == "unless-stopped"
    # The default site, built from site/ into the image, reads its database.
    page = requests.get(f"http://127.0.0.1:{installation.http_port}/", timeout=10)
    assert page.status_code == 200, page.text
    assert 'id="visits"' in page.text
    assert "Ready (ReconciliationSucceeded)" in installed.stdout + installed.stderr
    # The closing lines: where the site and phpMyAdmin are.
    screen = installed.stdout + installed.stderr
    assert re.search(rf"site: http://[^ /]+:{installation.http_port}/ and https://", screen), screen
    assert "phpMyAdmin: off; to turn it on, COMPOSE_PROFILES=admin in" in screen
    assert "ssh -L 8081:127.0.0.1:8081 root@" in screen
    assert "http://127.0.0.1:8081/" in screen
    # The daemon in its container is reached from the VM on the published loopback port.
    health = requests.get(f"http://127.0.0.1:{installation.metrics_port}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["applied_commit"] == head
    metrics = requests.get(f"http://127.0.0.1:{installation.metrics_port}/metrics", timeout=10)
    assert f'reconciler_applied_commit_info{{branch="main",commit="{head}"' in metrics.text
    bindings = installation.client.api.inspect_container(installation.daemon)["HostConfig"][
        "PortBindings"
    ]
    assert bindings == {
        "9365/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(installation.metrics_port)}]
    }


def test_the_host_command_runs_reconciler_in_its_container_without_a_terminal(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    command = installation.root / "bin" / "reconciler"
    assert stat.S_IMODE(command.stat().st_mode) == 0o755
    # As cron or a script runs it: no terminal (docker exec -it would fail).
    result = subprocess.run(
        [str(command), "status", "--json"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    head = git("rev-parse", "HEAD", cwd=installation.work)
    assert json.loads(result.stdout)["applied_commit"] == head
    assert f"command: {command} runs reconciler in {installation.daemon}" in (
        installed.stdout + installed.stderr
    )


def test_the_env_file_is_private_and_holds_generated_secrets(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    env_file = installation.config_dir / "reconciler.env"
    mode = stat.S_IMODE(env_file.stat().st_mode)
    values = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )

    assert mode == 0o600
    assert stat.S_IMODE(installation.config_dir.stat().st_mode) == 0o700
    assert values["RECONCILER_IMAGE"].startswith(f"{installation.image_name}:")
    for secret in ("MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD"):
        assert len(values[secret]) == 32
        assert values[secret] not in installed.stdout + installed.stderr
    # The age key for encrypted secrets: private, its recipient printed, the key never.
    age_key = installation.config_dir / "age.key"
    assert values["RECONCILER_AGE_KEY_FILE"] == str(age_key)
    assert stat.S_IMODE(age_key.stat().st_mode) == 0o600
    recipient = age_key.read_text().split("# public key: ")[1].split()[0]
    assert recipient in installed.stderr
    assert age_key.read_text().split()[-1] not in installed.stdout + installed.stderr
    # What each printed key is for, said at the end.
    assert "age recipient (above, age1...): public; encrypt for it the secrets" in installed.stderr
    assert "backup key (above): without it no backup can be read" in installed.stderr
    # None of them, nor a password, is in the install log.
    log = installation.log.read_text()
    for secret in (
        values["RECONCILER_BACKUP_KEY"],
        values["MARIADB_ROOT_PASSWORD"],
        values["MARIADB_PASSWORD"],
        age_key.read_text().split()[-1],
    ):
        assert secret not in log


def test_the_screen_has_one_line_per_step_and_the_tools_output_is_in_the_log(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    screen = installed.stdout + installed.stderr
    log = installation.log.read_text()

    assert stat.S_IMODE(installation.log.stat().st_mode) == 0o600
    assert installed.stderr.startswith(
        f"[install] log: the tools' output goes to {installation.log}\n"
    )
    # docker build's output (the legacy builder's deprecation notice, pip's
    # warnings), the stand-in images' builder and the sync's own log: in the log only.
    for noise in ("DEPRECATED", "WARNING", "[build-base-images]", "Step 1/", " info "):
        assert noise not in screen, noise
    assert "$ docker build " in log
    assert "[build-base-images] done" in log
    assert "sync.done result=succeeded" in log
    assert "condition: Ready (ReconciliationSucceeded)" in log
    # The steps are in the log too, so it reads as the whole run.
    assert "[install] image: building" in log
    # What the sync did stays on screen.
    assert "create service webserver: no container" in installed.stdout
    assert re.search(r"converged \(\d+ change\(s\)\)", installed.stdout)


def test_the_reconciler_image_has_a_readable_tag(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    env = (installation.config_dir / "reconciler.env").read_text()
    (image,) = re.findall(r"^RECONCILER_IMAGE=(.*)$", env, re.MULTILINE)
    name, _, tag = image.rpartition(":")
    version = re.search(r'^version = "(.*)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)

    assert name == installation.image_name
    assert re.fullmatch(r"\d+\.\d+\.\d+.*-[0-9a-f]{7,}", tag), tag
    assert version is not None
    assert tag.startswith(f"{version[1]}-")
    # The checkout has no git: a digest of the image's sources names the build.
    scratch = installation.root / "tag"
    scratch.mkdir(exist_ok=True)
    digest = run_steps(scratch, "sources_digest", HERE=str(installation.checkout))
    assert tag == f"{version[1]}-{digest.stdout.strip()}", digest.stderr
    attrs = installation.container(installation.daemon)
    assert attrs is not None
    assert attrs["Config"]["Image"] == image


def test_a_second_run_changes_nothing(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    env_file = installation.config_dir / "reconciler.env"
    before_env = env_file.read_bytes()
    names = [f"{installation.project}-{s}-1" for s in ("db", "webserver", "reconciler")]
    before = {name: (installation.container(name) or {}).get("Id") for name in names}

    again = installation.install("--yes", "--local-images", "--image-name", installation.image_name)

    assert again.returncode == 0, again.stderr[-4000:]
    assert "converged (0 change(s))" in again.stdout
    # Nothing to build: a build of the same inputs may get another ID, which would
    # move the tag and make the reconciler recreate itself.
    assert "built already from these sources" in again.stderr
    assert env_file.read_bytes() == before_env
    assert {name: (installation.container(name) or {}).get("Id") for name in names} == before


def test_a_push_is_deployed_by_the_running_reconciler(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    compose_path = installation.work / "desired-state/compose.yaml"
    compose = yaml.safe_load(compose_path.read_text())
    compose["services"]["extra"] = {
        "image": "reconciler-local/busybox:latest",
        "command": ["sleep", "3600"],
        "restart": "unless-stopped",
    }
    commit = installation.push(
        "add a service", {"desired-state/compose.yaml": yaml.safe_dump(compose)}
    )

    def deployed() -> bool:
        attrs = installation.container(f"{installation.project}-extra-1")
        return attrs is not None and attrs["Config"]["Labels"][labels.COMMIT] == commit

    wait_until("the daemon to deploy the pushed service", deployed, timeout_s=120)


def test_a_commit_that_changes_the_reconciler_replaces_it_and_the_next_pass_succeeds(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    old = installation.container(installation.daemon)
    assert old is not None
    installation.note_anonymous_volumes()
    compose_path = installation.work / "desired-state/compose.yaml"
    compose = yaml.safe_load(compose_path.read_text())
    compose["services"]["reconciler"]["environment"]["RECONCILER_LOG_FORMAT"] = "json"
    commit = installation.push(
        "reconciler: a new setting", {"desired-state/compose.yaml": yaml.safe_dump(compose)}
    )

    def replaced() -> bool:
        attrs = installation.container(installation.daemon)
        return (
            attrs is not None
            and attrs["Id"] != old["Id"]
            and attrs["Config"]["Labels"][labels.COMMIT] == commit
            and state_of(attrs) == "healthy"
        )

    wait_until("the new reconciler container to be healthy", replaced, timeout_s=240)
    helper_name = f"{installation.project}-reconciler-self-update"

    def helper_done() -> bool:
        return state_of(installation.container(helper_name)) in {"exited", "missing"}

    # The helper removes the old container once the new one is healthy: a moment later.
    wait_until("the self-update helper to finish", helper_done, timeout_s=60)
    helper = installation.container(helper_name)
    assert helper is not None
    assert helper["State"]["ExitCode"] == 0
    assert installation.container(str(old["Id"])) is None
    replaced_at = time.time()

    def next_pass_succeeded() -> bool:
        status = installation.status()
        last = str(status.get("last_sync") or "")
        return (
            status.get("applied_commit") == commit
            and status.get("last_result") == "succeeded"
            and last > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(replaced_at))
        )

    wait_until("a pass of the new reconciler to succeed", next_pass_succeeded, timeout_s=60)
    installation.note_anonymous_volumes()


def test_uninstall_removes_the_reconciler_and_leaves_the_volumes(
    installation: Installation, installed: subprocess.CompletedProcess[str]
) -> None:
    volumes = {f"{installation.project}_{name}" for name in ("uploads", "tls", "db")}
    installation.note_anonymous_volumes()

    result = installation.install("--uninstall")

    assert result.returncode == 0, result.stderr
    assert installation.container(installation.daemon) is None
    present = {v.name for v in installation.client.volumes.list()}
    assert volumes <= present
    # The stack keeps running, unmanaged.
    assert state_of(installation.container(f"{installation.project}-db-1")) == "healthy"


# --- the guards, each in a throw-away container (busybox's sh: POSIX, no bashisms) ---


def run_guard(
    tmp_path: Path, os_release: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    mounts = ["-v", f"{ROOT / 'install.sh'}:/install.sh:ro"]
    if os_release is not None:
        release = tmp_path / "os-release"
        release.write_text(os_release)
        mounts += ["-v", f"{release}:/etc/os-release:ro"]
    return subprocess.run(
        [
            *("docker", "run", "--rm", "--label", "dev.reconciler.test=install", *mounts),
            *("reconciler-local/busybox:latest", "sh", "/install.sh", *args),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_needs_nothing(tmp_path: Path, busybox_image: str) -> None:
    result = run_guard(tmp_path, None, "--help")

    assert result.returncode == 0
    for flag in ("--repo", "--local", "--uninstall", "--base-image", "--backup-target"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("os_release", "expected"),
    [
        ('ID=alpine\nVERSION_ID="3.20"\n', "unsupported OS 'alpine'"),
        (None, "cannot tell the OS"),
    ],
    ids=["alpine", "no-os-release"],
)
def test_an_unsupported_os_is_a_clear_error(
    tmp_path: Path, busybox_image: str, os_release: str | None, expected: str
) -> None:
    result = run_guard(tmp_path, os_release, "--yes")

    assert result.returncode == 1
    assert expected in result.stderr
    assert "Debian, Ubuntu and Fedora" in result.stderr or "Debian, Ubuntu, Fedora" in result.stderr


def test_a_flag_without_its_value_or_an_unknown_one_is_refused(
    tmp_path: Path, busybox_image: str
) -> None:
    missing = run_guard(tmp_path, "ID=debian\n", "--repo")
    unknown = run_guard(tmp_path, "ID=debian\n", "--colour")

    assert (missing.returncode, unknown.returncode) == (1, 1)
    assert "--repo needs a value" in missing.stderr
    assert "unknown argument: --colour" in unknown.stderr


SHELL_SCRIPTS = [
    "install.sh",
    "images/reconciler/wheelhouse.sh",
    "images/local/build-base-images.sh",
    "images/local/phpmyadmin/entrypoint.sh",
    "images/local/openlitespeed/entrypoint.sh",
    "images/local/openlitespeed/lswsctrl",
]


def test_shell_scripts_pass_shellcheck() -> None:
    tools.require("shellcheck")
    result = subprocess.run(
        ["shellcheck", "-s", "sh", *SHELL_SCRIPTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout


def test_an_ssh_repository_gets_a_deploy_key_and_where_to_add_it(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # No server answers on port 1: the key is made and printed, the first sync
    # keeps failing as "not reachable", and the daemon is started anyway, so
    # adding the key later is all it takes. ssh-keyscan cannot read a host key
    # there, so the server's line is given with --known-hosts.
    root = tmp_path_factory.mktemp("sshkey")
    given_known_hosts = root / "given_known_hosts"
    given_known_hosts.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtest\n")
    checkout = root / "checkout"
    checkout.mkdir()
    copy_repository(checkout)
    installation = Installation(
        root=root,
        checkout=checkout,
        remote=root / "none.git",
        url="ssh://git@127.0.0.1:1/site.git",
        work=root,
        config_dir=root / "etc",
        state_dir=root / "state",
        project="it" + secrets.token_hex(4),
        image_name="reconciler-it-" + secrets.token_hex(4),
        http_port=free_port(),
        client=docker_client,
    )
    try:
        result = installation.install(
            *("--yes", "--repo", installation.url, "--project", installation.project),
            *("--backup-target", f"file://{installation.state_dir}/backups"),
            *("--local-images", "--image-name", installation.image_name, "--timeout", "20"),
            *("--known-hosts", str(given_known_hosts)),
        )
        installation.note_anonymous_volumes()

        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        key = installation.config_dir / "deploy_key"
        public = (installation.config_dir / "deploy_key.pub").read_text().strip()
        assert public.startswith("ssh-ed25519 ")
        assert public in output
        assert "Settings > Deploy keys" in output
        assert "Repository settings > Access keys" in output
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        known_hosts = installation.config_dir / "known_hosts"
        assert known_hosts.read_text() == given_known_hosts.read_text()
        assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
        env = (installation.config_dir / "reconciler.env").read_text()
        assert f"RECONCILER_SSH_KEY={key}" in env
        assert state_of(installation.container(installation.daemon)) == "healthy"
    finally:
        remove_project(docker_client, installation.project)
        for name in installation.anonymous_volumes:
            with contextlib.suppress(docker.errors.APIError):
                docker_client.api.remove_volume(name)
        remove_tags(docker_client, installation.image_name)


# --- the env file, keys and known_hosts: install.sh's steps sourced on their own ---


def run_steps(
    tmp_path: Path, steps: str, *, path_dir: Path | None = None, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Source install.sh's functions (everything above "main") and run ``steps``.

    Under umask 022, the usual one: what is private must be made so by install.sh.
    """
    library = tmp_path / "install-functions.sh"
    text = (ROOT / "install.sh").read_text()
    library.write_text(text[: text.index("# --- main")])
    config = tmp_path / "etc" / "reconciler"
    variables = {
        "CONFIG_DIR": str(config),
        "ENV_FILE": str(config / "reconciler.env"),
        "STATE_DIR": str(tmp_path / "state"),
        "YES": "1",
        "OS_ID": "debian",
        **variables,
    }
    assignments = "".join(f"{name}='{value}'; " for name, value in variables.items())
    env = dict(os.environ)
    if path_dir is not None:
        env["PATH"] = f"{path_dir}:{env['PATH']}"
    return subprocess.run(
        ["sh", "-c", f"umask 022; . '{library}'; {assignments}{steps}", "install.sh"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_env_file_keys_and_known_hosts_are_0600_in_0700_folders(
    tmp_path: Path, ssh_git_server: SshRemote
) -> None:
    backups = tmp_path / "srv" / "backups"
    result = run_steps(
        tmp_path,
        'write_env_file && ensure_deploy_key && private_dir "$STATE_DIR"',
        REPO=ssh_git_server.url,
        BACKUP_TARGET=f"file://{backups}",
    )
    assert result.returncode == 0, result.stderr
    config = tmp_path / "etc" / "reconciler"
    for folder in (tmp_path / "etc", config, tmp_path / "srv", backups, tmp_path / "state"):
        assert _mode(folder) == 0o700, folder
    for name in ("reconciler.env", "deploy_key", "deploy_key.pub", "known_hosts"):
        assert _mode(config / name) == 0o600, name
    host_key = ssh_git_server.known_hosts.read_text().split()[2]
    assert host_key in (config / "known_hosts").read_text()
    assert (
        f"RECONCILER_KNOWN_HOSTS={config / 'known_hosts'}"
        in (config / "reconciler.env").read_text()
    )
    assert not list(config.glob(".known_hosts*"))


def _fake_keyscan(tmp_path: Path) -> Path:
    """An ssh-keyscan that reads nothing and still exits 0 (some versions do)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ssh-keyscan"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("keyscan", ["fails", "prints-nothing"])
def test_no_host_key_from_ssh_keyscan_stops_install_and_writes_no_known_hosts(
    tmp_path: Path, keyscan: str
) -> None:
    port = free_port()  # nothing listens there
    path_dir = _fake_keyscan(tmp_path) if keyscan == "prints-nothing" else None
    result = run_steps(
        tmp_path,
        "write_env_file && ensure_deploy_key",
        path_dir=path_dir,
        REPO=f"ssh://git@127.0.0.1:{port}/site.git",
        BACKUP_TARGET=f"file://{tmp_path}/backups",
    )
    assert result.returncode == 1, result.stderr
    assert f"could not read the host key of 127.0.0.1 (port {port})" in result.stderr
    assert "--known-hosts FILE" in result.stderr
    config = tmp_path / "etc" / "reconciler"
    assert not (config / "known_hosts").exists()
    assert not list(config.glob(".known_hosts*"))
    assert not re.search(r"^RECONCILER_KNOWN_HOSTS=", (config / "reconciler.env").read_text(), re.M)


def test_known_hosts_from_a_file_is_copied_0600_and_an_empty_one_is_refused(
    tmp_path: Path,
) -> None:
    port = free_port()
    given = tmp_path / "given_known_hosts"
    given.write_text("# only a comment\n")
    given.chmod(0o644)
    common: dict[str, Any] = {
        "REPO": f"ssh://git@127.0.0.1:{port}/site.git",
        "BACKUP_TARGET": f"file://{tmp_path}/backups",
        "KNOWN_HOSTS": str(given),
    }
    refused = run_steps(tmp_path, "write_env_file && ensure_deploy_key", **common)
    assert refused.returncode == 1
    assert f"--known-hosts {given} holds no host key" in refused.stderr

    line = f"[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtest\n"
    given.write_text(line)
    result = run_steps(tmp_path, "ensure_deploy_key", **common)
    assert result.returncode == 0, result.stderr
    known = tmp_path / "etc" / "reconciler" / "known_hosts"
    assert known.read_text() == line
    assert _mode(known) == 0o600


def test_the_backup_key_is_made_once_0600_and_shown_only_when_made(tmp_path: Path) -> None:
    common: dict[str, Any] = {
        "REPO": "file:///srv/site.git",
        "BACKUP_TARGET": f"file://{tmp_path}/backups",
    }
    first = run_steps(tmp_path, "write_env_file && ensure_backup_key", **common)
    assert first.returncode == 0, first.stderr
    env_file = tmp_path / "etc" / "reconciler" / "reconciler.env"
    (line,) = [
        x for x in env_file.read_text().splitlines() if x.startswith("RECONCILER_BACKUP_KEY=")
    ]
    key = line.partition("=")[2]
    assert re.fullmatch(r"[0-9a-f]{64}", key), key
    assert _mode(env_file) == 0o600
    assert first.stderr.count(key) == 1  # on a line of its own, for copying
    assert f"\n{key}\n" in first.stderr
    assert "password manager" in first.stderr
    assert "without it no backup can be read" in first.stderr
    assert key not in first.stdout

    again = run_steps(tmp_path, "write_env_file && ensure_backup_key", **common)
    assert again.returncode == 0, again.stderr
    assert key not in again.stderr + again.stdout
    assert "backup key" not in again.stderr
    assert env_file.read_text().count("RECONCILER_BACKUP_KEY=") == 1
    assert f"RECONCILER_BACKUP_KEY={key}\n" in env_file.read_text()
    assert _mode(env_file) == 0o600


def test_an_empty_backup_key_line_is_replaced_and_a_given_key_is_kept(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "reconciler"
    config.mkdir(parents=True)
    env_file = config / "reconciler.env"
    env_file.write_text("RECONCILER_PROJECT=site\nRECONCILER_BACKUP_KEY=\nBACKUP_TIMEZONE=UTC\n")
    env_file.chmod(0o600)
    made = run_steps(tmp_path, "ensure_backup_key")
    assert made.returncode == 0, made.stderr
    lines = env_file.read_text().splitlines()
    assert lines[0] == "RECONCILER_PROJECT=site"
    assert lines[2] == "BACKUP_TIMEZONE=UTC"
    assert re.fullmatch(r"RECONCILER_BACKUP_KEY=[0-9a-f]{64}", lines[1]), lines[1]
    assert _mode(env_file) == 0o600

    # The key a business already has (a new VM after a lost one) is never replaced.
    env_file.write_text("RECONCILER_BACKUP_KEY='the business key'\n")
    kept = run_steps(tmp_path, "ensure_backup_key")
    assert kept.returncode == 0, kept.stderr
    assert env_file.read_text() == "RECONCILER_BACKUP_KEY='the business key'\n"
    assert "the business key" not in kept.stderr


# --- the install log, the image's tag and the pruning of earlier builds ---


def test_noisy_keeps_a_command_s_output_in_the_log_and_shows_its_end_when_it_fails(
    tmp_path: Path,
) -> None:
    log = tmp_path / "install.log"
    log.write_text("")
    quiet = run_steps(
        tmp_path, "noisy sh -c 'echo fetched; echo WARNING: a notice >&2'", INSTALL_LOG=str(log)
    )
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert "fetched\nWARNING: a notice\n" in log.read_text()

    lines = "; ".join(f"echo line{i}" for i in range(30))
    failed = run_steps(
        tmp_path, f"noisy sh -c '{lines}; echo broken >&2; exit 3'", INSTALL_LOG=str(log)
    )
    assert failed.returncode == 3
    assert failed.stdout == ""
    assert f"sh failed (exit 3); the last lines of {log}:" in failed.stderr
    assert "    broken\n" in failed.stderr
    assert "line29" in failed.stderr
    assert "line5\n" not in failed.stderr  # the end of the log, not all of it
    assert "broken" in log.read_text()


def test_the_log_is_made_0600_and_named_on_screen(tmp_path: Path) -> None:
    log = tmp_path / "var" / "log" / "reconciler-install.log"
    result = run_steps(tmp_path, "open_log && log 'step: done'", LOG_FILE=str(log))
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"[install] log: the tools' output goes to {log}\n[install] step: done\n"
    )
    assert _mode(log) == 0o600
    assert "[install] step: done\n" in log.read_text()


def test_a_log_past_its_size_is_kept_as_one_earlier_generation(tmp_path: Path) -> None:
    log = tmp_path / "reconciler-install.log"
    log.write_text("the runs before\n" * 100)
    log.chmod(0o600)
    small = run_steps(tmp_path, "open_log", LOG_FILE=str(log), LOG_ROTATE_BYTES="100000")
    assert small.returncode == 0, small.stderr
    assert log.read_text().startswith("the runs before\n")  # under the size: appended to
    assert not (tmp_path / "reconciler-install.log.1").exists()

    rotated = run_steps(tmp_path, "open_log", LOG_FILE=str(log), LOG_ROTATE_BYTES="1000")
    assert rotated.returncode == 0, rotated.stderr
    earlier = tmp_path / "reconciler-install.log.1"
    assert earlier.read_text().startswith("the runs before\n")
    assert "the runs before" not in log.read_text()
    assert "===== install.sh" in log.read_text()
    assert _mode(log) == 0o600
    assert _mode(earlier) == 0o600


def _tag_checkout(tmp_path: Path) -> Path:
    """The files build_tag reads, committed in a git repository of their own."""
    checkout = tmp_path / "checkout"
    (checkout / "reconciler").mkdir(parents=True)
    (checkout / "images/reconciler").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "reconciler"\nversion = "1.2.3"\n')
    (checkout / "reconciler/__init__.py").write_text("")
    (checkout / "images/reconciler/Dockerfile").write_text("FROM scratch\n")
    (checkout / ".gitignore").write_text("__pycache__/\n")  # as the project's own
    (checkout / "desired-state").mkdir()
    git("init", "-q", "-b", "main", cwd=checkout)
    git("add", "-A", cwd=checkout)
    git("commit", "-q", "-m", "the image's sources", cwd=checkout)
    return checkout


def test_the_image_tag_is_the_version_and_the_commit_of_a_clean_checkout(tmp_path: Path) -> None:
    checkout = _tag_checkout(tmp_path)

    def tag() -> str:
        result = run_steps(tmp_path, "build_tag", HERE=str(checkout))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    commit = git("log", "-1", "--abbrev=7", "--format=%h", cwd=checkout)
    assert tag() == f"1.2.3-{commit}"
    # A commit elsewhere (the desired state) is no new build.
    (checkout / "desired-state/compose.yaml").write_text("services: {}\n")
    git("add", "-A", cwd=checkout)
    git("commit", "-q", "-m", "a deploy", cwd=checkout)
    assert tag() == f"1.2.3-{commit}"
    # Edited sources: a digest of what they hold, so the change gets a tag of its own.
    (checkout / "reconciler/__init__.py").write_text("# edited\n")
    edited = tag()
    assert re.fullmatch(r"1\.2\.3-[0-9a-f]{12}", edited), edited
    # Python's caches are not in the build context: not in the digest either.
    (checkout / "reconciler/__pycache__").mkdir()
    (checkout / "reconciler/__pycache__/__init__.cpython-311.pyc").write_bytes(b"\0")
    assert tag() == edited
    git("commit", "-q", "-am", "an edit", cwd=checkout)
    committed = git("log", "-1", "--abbrev=7", "--format=%h", cwd=checkout)
    assert tag() == f"1.2.3-{committed}"
    # An untracked file is a change too; the same contents give the same digest.
    (checkout / "images/reconciler/new.sh").write_text("")
    untracked = tag()
    assert untracked not in (edited, f"1.2.3-{committed}")
    # No git at all: the digest, the same for the same files.
    shutil.rmtree(checkout / ".git")
    assert tag() == untracked
    (checkout / "images/reconciler/new.sh").write_text("echo\n")
    assert tag() != untracked


def test_pruning_removes_earlier_builds_of_every_tag_form_only(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    removed = tmp_path / "removed"
    tags = [
        "latest",
        "0.1.0-abc1234",  # the build of this run
        "0.1.0-1111111",  # what the daemon runs
        "0.1.0-2222222",  # an earlier build, clean tree
        "0.1.0-0123456789ab",  # an earlier build, edited tree
        "0123456789ab",  # a build of an earlier install.sh
        "mine",  # tagged by hand
        "0.1.0",
    ]
    listing = "".join(f"echo 'rc:{t}'; " for t in tags)
    fake = bin_dir / "docker"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f"  image) {listing};;\n"
        "  inspect) echo rc:0.1.0-1111111 ;;\n"
        f'  rmi) echo "$2" >>{removed} ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)

    result = run_steps(
        tmp_path,
        "prune_old_builds",
        path_dir=bin_dir,
        IMAGE="",
        IMAGE_NAME="rc",
        RECONCILER_IMAGE="rc:0.1.0-abc1234",
        DAEMON="site-reconciler-1",
    )

    assert result.returncode == 0, result.stderr
    assert removed.read_text().split() == [
        "rc:0.1.0-2222222",
        "rc:0.1.0-0123456789ab",
        "rc:0123456789ab",
    ]


@pytest.mark.parametrize("where", ["vm", "pc"])
def test_the_closing_lines_say_where_the_site_and_phpmyadmin_are(
    tmp_path: Path, where: str
) -> None:
    config = tmp_path / "etc" / "reconciler"
    config.mkdir(parents=True)
    env_file = config / "reconciler.env"
    if where == "pc":
        env_file.write_text(
            "RECONCILER_LOCAL_REPO=/src/site\nHTTP_PORT=8080\nHTTPS_PORT=443\n"
            "COMPOSE_PROFILES=admin\nPHPMYADMIN_PORT=8082\n"
        )
    else:
        env_file.write_text("RECONCILER_PROJECT=site\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # This machine's address, as the VM's route table would give it.
    (bin_dir / "ip").write_text(
        "#!/bin/sh\necho '192.0.2.1 via 10.0.0.1 dev eth0 src 10.0.0.5 uid 0'\n"
    )
    (bin_dir / "ip").chmod(0o755)

    result = run_steps(
        tmp_path,
        "closing_lines",
        path_dir=bin_dir,
        LOCAL="0",
        DAEMON="site-reconciler-1",
        INSTALL_LOG=str(tmp_path / "install.log"),
        SHOWN_RECIPIENT="1",
        SHOWN_BACKUP_KEY="1" if where == "vm" else "0",
    )

    assert result.returncode == 0, result.stderr
    said = result.stderr
    if where == "pc":
        assert "site: http://localhost:8080/ and https://localhost/\n" in said
        assert "phpMyAdmin: on; reach it with http://127.0.0.1:8082/\n" in said
        assert "backup key" not in said
    else:
        assert "site: http://10.0.0.5/ and https://10.0.0.5/\n" in said
        assert f"phpMyAdmin: off; to turn it on, COMPOSE_PROFILES=admin in {env_file}" in said
        assert "docker restart site-reconciler-1" in said
        assert (
            "phpMyAdmin: then reach it with ssh -L 8081:127.0.0.1:8081 root@10.0.0.5"
            " and http://127.0.0.1:8081/\n" in said
        )
        assert "backup key (above): without it no backup can be read" in said
    assert "age recipient (above, age1...): public" in said
    assert "deploy key" not in said
    assert f"log of this run: {tmp_path / 'install.log'}" in said


def test_pruning_removes_the_build_a_rebuild_took_the_tag_from_unless_it_has_a_name(
    tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str
) -> None:
    def build(label: str) -> str:
        context = tmp_path / label
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM {busybox_image}\nLABEL dev.reconciler.test=install-prune-{label}\n"
        )
        image, _ = docker_client.images.build(path=str(context), rm=True)
        return str(image.id)

    keep_tag = f"reconciler-it-keep-{secrets.token_hex(4)}:mine"
    left, named = build(secrets.token_hex(4)), build(secrets.token_hex(4))
    docker_client.images.get(named).tag(keep_tag)
    try:
        for previous, gone in ((left, True), (named, False)):
            result = run_steps(
                tmp_path,
                "prune_old_builds",
                IMAGE="",
                IMAGE_NAME=f"reconciler-it-none-{secrets.token_hex(4)}",
                RECONCILER_IMAGE="x:0.1.0-abc1234",
                DAEMON="no-such-container",
                PREVIOUS_ID=previous,
            )
            assert result.returncode == 0, result.stderr
            try:
                docker_client.images.get(previous)
                present = True
            except docker.errors.ImageNotFound:
                present = False
            assert present is not gone, result.stderr
    finally:
        for image in (keep_tag, left):
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(image)
