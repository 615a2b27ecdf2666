"""The images of images/ build on the local base images and do what they claim.

- images/reconciler: builds from the repository root on the local python base,
  runs ``reconciler --help``, declares ``reconciler healthcheck`` as its health
  check, and that check turns healthy once the daemon's loop runs;
- images/webserver: builds site/ into the image on the local OpenLiteSpeed
  stand-in, serves it on 80 and 443 (a plain 503 page without a database),
  turns healthy; the code belongs to root, uploads (outside the docroot) to
  PHP's user; each tls volume gets its own self-signed certificate unless the
  user put one there.

Image sizes are printed (``-s`` or ``-rA`` shows them), never asserted.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYTHON_BASE = "reconciler-local/python:local"
OLS_BASE = "reconciler-local/openlitespeed:local"
TEST_LABEL = "dev.reconciler.test"


def docker_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def require_image(client: docker.DockerClient, name: str, *, only: str) -> None:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"image {name} is missing: run images/local/build-base-images.sh --only {only}",
            pytrace=False,
        )


def build(tag: str, *args: str) -> None:
    result = docker_cli("build", "-q", "--label", f"{TEST_LABEL}=images", "-t", tag, *args)
    assert result.returncode == 0, f"docker build {tag} failed:\n{result.stderr[-4000:]}"


def report_size(client: docker.DockerClient, tag: str) -> None:
    size = client.images.get(tag).attrs["Size"]
    print(f"\n{tag}: {size / 1e6:.0f} MB")


def fill_wheelhouse() -> None:
    """The host's pip fills images/reconciler/wheels/ (pip in a container may reach no index)."""
    result = subprocess.run(
        ["sh", str(ROOT / "images/reconciler/wheelhouse.sh"), sys.executable],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"wheelhouse.sh failed:\n{result.stderr[-4000:]}"


def wait_health(client: docker.DockerClient, container_id: str, *, timeout_s: float) -> str:
    """Until the container is healthy or unhealthy (or the time is up); return that status."""
    deadline = time.monotonic() + timeout_s
    status = "none"
    while time.monotonic() < deadline:
        attrs = client.api.inspect_container(container_id)
        status = ((attrs["State"].get("Health") or {}).get("Status")) or attrs["State"]["Status"]
        if status in {"healthy", "unhealthy", "exited", "dead"}:
            return str(status)
        time.sleep(1)
    return str(status)


@pytest.fixture(scope="module")
def reconciler_image(docker_client: docker.DockerClient) -> Iterator[str]:
    require_image(docker_client, PYTHON_BASE, only="python")
    fill_wheelhouse()
    tag = f"reconciler-test-{secrets.token_hex(4)}:latest"
    build(
        tag,
        "--build-arg",
        f"BASE={PYTHON_BASE}",
        "-f",
        str(ROOT / "images/reconciler/Dockerfile"),
        str(ROOT),
    )
    report_size(docker_client, tag)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def webserver_image(docker_client: docker.DockerClient) -> Iterator[str]:
    require_image(docker_client, OLS_BASE, only="openlitespeed")
    tag = f"webserver-test-{secrets.token_hex(4)}:latest"
    # As compose.yaml builds it: site/ is the context, the recipe lies outside it.
    build(
        tag,
        "--build-arg",
        f"BASE={OLS_BASE}",
        "-f",
        str(ROOT / "images/webserver/Dockerfile"),
        str(ROOT / "site"),
    )
    report_size(docker_client, tag)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture
def run_detached(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Ids of containers a test starts; removed with their anonymous volumes afterwards."""
    started: list[str] = []
    yield started
    for container_id in started:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(container_id, force=True, v=True)


def test_reconciler_image_carries_restic(reconciler_image: str) -> None:
    # The backup engine, also run from this image in the helpers that read volumes.
    result = docker_cli("run", "--rm", "--entrypoint", "restic", reconciler_image, "version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("restic 0.")


def test_reconciler_image_runs_the_cli(reconciler_image: str) -> None:
    result = docker_cli("run", "--rm", reconciler_image, "--help")

    assert result.returncode == 0, result.stderr
    for command in ("validate", "plan", "sync", "run", "status", "healthcheck"):
        assert command in result.stdout


def test_reconciler_image_has_git_ssh_gpg_and_no_build_tools(reconciler_image: str) -> None:
    # ssh-keygen and gpg verify signed commits (RECONCILER_VERIFY=ssh|gpg).
    script = (
        "git --version && ssh -V 2>&1 && command -v ssh-keygen && gpg --version && "
        "! test -e /opt/reconciler/bin/pip && ! command -v gcc && ! command -v cc"
    )
    result = docker_cli("run", "--rm", "--entrypoint", "sh", reconciler_image, "-c", script)

    assert result.returncode == 0, result.stdout + result.stderr


def test_reconciler_image_declares_its_contract(
    docker_client: docker.DockerClient, reconciler_image: str
) -> None:
    config = docker_client.images.get(reconciler_image).attrs["Config"]

    assert config["Healthcheck"]["Test"] == ["CMD", "reconciler", "healthcheck"]
    assert config["Entrypoint"] == ["reconciler"]
    assert config["Cmd"] == ["run"]
    assert "/var/lib/reconciler" in (config.get("Volumes") or {})
    # A real variable would win over the env file, where install.sh records the state dir.
    assert not any(v.startswith("RECONCILER_STATE_DIR=") for v in config.get("Env") or [])


def test_reconciler_health_check_passes_once_the_loop_runs(
    docker_client: docker.DockerClient, reconciler_image: str, run_detached: list[str]
) -> None:
    # Unhealthy before any loop: no heartbeat yet.
    before = docker_cli("run", "--rm", reconciler_image, "healthcheck")
    assert before.returncode == 1, before.stdout + before.stderr

    # The loop beats even while its repository cannot be reached (it backs
    # off), so no git remote or Docker socket is needed to see it alive.
    result = docker_cli(
        "run",
        "-d",
        "--label",
        f"{TEST_LABEL}=images",
        "--health-interval",
        "2s",
        "--health-start-period",
        "0s",
        "-e",
        "RECONCILER_REPO=/nonexistent/repository.git",
        "-e",
        "RECONCILER_INTERVAL=5",
        reconciler_image,
    )
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    run_detached.append(container_id)

    status = wait_health(docker_client, container_id, timeout_s=60)

    logs = docker_client.api.logs(container_id, tail=20).decode(errors="replace")
    assert status == "healthy", f"status {status}; logs:\n{logs}"
    first_event = json.loads(logs.splitlines()[0])
    assert first_event["event"] == "daemon.start"


DOCROOT = "/var/www/vhosts/localhost/html"
UPLOADS = "/var/www/vhosts/localhost/uploads"
CERTS = "/var/www/vhosts/localhost/certs"
SNAKEOIL = "/etc/ssl/certs/ssl-cert-snakeoil.pem"


@dataclass
class Webservers:
    """Starts containers of the webserver image (its own entrypoint) and makes volumes."""

    client: docker.DockerClient
    image: str
    started: list[str]
    volumes: list[str] = field(default_factory=list)

    def start(self, *args: str, command: tuple[str, ...] = (), healthy: bool = True) -> str:
        """Start one (``args`` are docker run's options); unless ``healthy=False``,
        wait until it is healthy."""
        result = docker_cli(
            "run", "-d", "--label", f"{TEST_LABEL}=images", "--health-interval", "2s",
            *args, self.image, *command,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        container_id = result.stdout.strip()
        self.started.append(container_id)
        if healthy:
            status = wait_health(self.client, container_id, timeout_s=60)
            logs = self.client.api.logs(container_id).decode(errors="replace")
            assert status == "healthy", f"status {status}; logs:\n{logs}"
        return container_id

    def volume(self) -> str:
        name = f"webserver-test-{secrets.token_hex(4)}"
        self.client.volumes.create(name, labels={TEST_LABEL: "images"})
        self.volumes.append(name)
        return name


@pytest.fixture
def webservers(
    docker_client: docker.DockerClient, webserver_image: str, run_detached: list[str]
) -> Iterator[Webservers]:
    servers = Webservers(docker_client, webserver_image, run_detached)
    yield servers
    for container_id in run_detached:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(container_id, force=True, v=True)
    for name in servers.volumes:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(name).remove(force=True)


def in_container(
    client: docker.DockerClient, container_id: str, *command: str, user: str = "root"
) -> tuple[int, str]:
    run = client.api.exec_create(container_id, list(command), user=user)
    output = client.api.exec_start(run["Id"]).decode(errors="replace")
    return int(client.api.exec_inspect(run["Id"])["ExitCode"]), output


def served_certificate(client: docker.DockerClient, container_id: str) -> str:
    """Subject and SHA-256 fingerprint of the certificate the 443 listener presents."""
    script = (
        "openssl s_client -connect 127.0.0.1:443 -servername localhost </dev/null 2>/dev/null"
        " | openssl x509 -noout -subject -fingerprint -sha256"
    )
    code, output = in_container(client, container_id, "sh", "-c", script)
    assert code == 0, output
    return output.strip()


def fingerprint_of(client: docker.DockerClient, container_id: str, path: str) -> str:
    code, output = in_container(
        client, container_id, "openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256"
    )
    assert code == 0, output
    return output.strip()


def test_webserver_serves_the_site_on_80_and_443_and_a_plain_page_without_a_database(
    docker_client: docker.DockerClient, webservers: Webservers
) -> None:
    password = f"pw-{secrets.token_hex(6)}"
    container_id = webservers.start("-e", f"DB_PASSWORD={password}")

    for url in ("http://127.0.0.1/", "https://127.0.0.1/"):
        code, page = in_container(
            docker_client, container_id, "curl", "-sk", "-w", "\n%{http_code}", url
        )
        assert code == 0, page
        body, status = page.rsplit("\n", 1)
        assert status == "503"
        assert "This site is deployed by <code>git push</code>." in body
        assert "The database is unreachable just now." in body
        # No detail of the failure reaches the visitor: no password, no driver error.
        for secret in (password, "SQLSTATE", "getaddrinfo", "Stack trace"):
            assert secret not in body
    code, css = in_container(
        docker_client, container_id, "curl", "-s", "http://127.0.0.1/style.css"
    )
    assert "font" in css
    code, modules = in_container(
        docker_client, container_id, "/usr/local/lsws/lsphp83/bin/php", "-m"
    )
    assert {"mysqli", "pdo_mysql"} <= set(modules.split())


def test_webserver_declares_ports_and_health_check(
    docker_client: docker.DockerClient, webserver_image: str
) -> None:
    config = docker_client.images.get(webserver_image).attrs["Config"]

    assert {"80/tcp", "443/tcp"} <= set(config["ExposedPorts"])
    # Helpers of this image must not each get an anonymous volume to leave behind.
    assert not config.get("Volumes")
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "curl"]
    assert config["Entrypoint"] == ["/usr/local/bin/webserver-start"]
    assert f"UPLOADS_DIR={UPLOADS}" in config["Env"]


def test_the_code_is_built_in_owned_by_root_and_read_only_for_php(webserver_image: str) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "site"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    listing = docker_cli(
        "run",
        "--rm",
        "--label",
        f"{TEST_LABEL}=images",
        "--entrypoint",
        "sh",
        webserver_image,
        "-c",
        f"cd {DOCROOT} && find . -mindepth 1 | sort && find . ! -user root | wc -l",
    )
    assert listing.returncode == 0, listing.stderr
    *files, not_root = listing.stdout.split()
    # Exactly the site's files: no placeholder, no Dockerfile smuggled in by the build.
    assert sorted(f.removeprefix("./") for f in files) == sorted(
        name.removeprefix("site/") for name in tracked
    )
    assert not_root == "0"
    # PHP's user (www-data on the stand-in) can read the code and change none of it.
    write = docker_cli(
        "run",
        "--rm",
        "--label",
        f"{TEST_LABEL}=images",
        "--user",
        "www-data",
        "--entrypoint",
        "sh",
        webserver_image,
        "-c",
        f"cat {DOCROOT}/index.php >/dev/null && ! touch {DOCROOT}/index.php "
        f"&& ! touch {DOCROOT}/new.php && ! rm -f {DOCROOT}/style.css",
    )
    assert write.returncode == 0, write.stdout + write.stderr


def test_uploads_belong_to_php_and_nothing_uploaded_is_served_or_run(
    docker_client: docker.DockerClient, webservers: Webservers
) -> None:
    uploads = webservers.volume()
    container_id = webservers.start("-v", f"{uploads}:{UPLOADS}")

    code, page = in_container(docker_client, container_id, "curl", "-s", "http://127.0.0.1/")
    assert "uploads folder writable." in page
    code, output = in_container(
        docker_client,
        container_id,
        "sh",
        "-c",
        f"echo '<?php echo 6*7;' > {UPLOADS}/evil.php && touch {UPLOADS}/by-php",
        user="www-data",
    )
    assert code == 0, output
    for path in ("/uploads/evil.php", "/../uploads/evil.php", "/%2e%2e/uploads/evil.php"):
        code, answer = in_container(
            docker_client,
            container_id,
            "curl",
            "-s",
            "--path-as-is",
            "-w",
            "\n%{http_code}",
            f"http://127.0.0.1{path}",
        )
        body, status = answer.rsplit("\n", 1)
        assert status in {"400", "403", "404"}, (path, answer)
        assert "42" not in body
        assert "<?php" not in body


def test_each_install_gets_its_own_certificate_and_keeps_it(
    docker_client: docker.DockerClient, webservers: Webservers
) -> None:
    first_tls = webservers.volume()
    first = webservers.start("-v", f"{first_tls}:{CERTS}")
    second = webservers.start("-v", f"{webservers.volume()}:{CERTS}")

    served = served_certificate(docker_client, first)
    assert "O = reconciler self-signed" in served
    assert "CN = localhost" in served
    assert served != served_certificate(docker_client, second)
    # Not the certificate every copy of the base image shares.
    assert fingerprint_of(docker_client, first, SNAKEOIL) not in served
    # A new container on the same volume (a recreate by a deploy) keeps it.
    docker_client.api.remove_container(first, force=True)
    again = webservers.start("-v", f"{first_tls}:{CERTS}")
    assert served_certificate(docker_client, again) == served


def test_a_stopped_webserver_starts_again_whatever_pid_its_last_run_left(
    docker_client: docker.DockerClient, webservers: Webservers
) -> None:
    # A restore stops the web server and starts the same container again. The
    # pid file of the last run may name a process alive in the new one (here
    # pid 1, the entrypoint): that must not pass for a running server.
    container_id = webservers.start()
    docker_client.api.stop(container_id, timeout=10)
    stale = b"1\n"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        member = tarfile.TarInfo("apache2.pid")
        member.size = len(stale)
        tar.addfile(member, io.BytesIO(stale))
    assert docker_client.api.put_archive(container_id, "/var/run/apache2", archive.getvalue())

    docker_client.api.start(container_id)

    status = wait_health(docker_client, container_id, timeout_s=60)
    logs = docker_client.api.logs(container_id).decode(errors="replace")
    assert status == "healthy", f"status {status}; logs:\n{logs}"
    code, answer = in_container(
        docker_client, container_id, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
        "http://127.0.0.1/style.css",
    )  # fmt: skip
    assert (code, answer) == (0, "200")


def test_a_certificate_the_user_put_there_is_served(
    docker_client: docker.DockerClient, webservers: Webservers, tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=shop.example",
            "-keyout",
            str(tls / "key.pem"),
            "-out",
            str(tls / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr

    container_id = webservers.start("-v", f"{tls}:{CERTS}")

    served = served_certificate(docker_client, container_id)
    assert "CN = shop.example" in served
    assert sorted(p.name for p in tls.iterdir()) == ["cert.pem", "key.pem"]


def test_a_key_without_its_certificate_stops_the_start_with_a_clear_message(
    docker_client: docker.DockerClient, webservers: Webservers, tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "key.pem").write_text("not a key\n")

    container_id = webservers.start("-v", f"{tls}:{CERTS}", healthy=False)

    exit_code = docker_client.api.wait(container_id, timeout=30)["StatusCode"]
    logs = docker_client.api.logs(container_id).decode(errors="replace")
    assert exit_code == 1, logs
    assert "needs both cert.pem" in logs
    # Nothing was made over the user's file.
    assert (tls / "key.pem").read_text() == "not a key\n"


def test_the_start_wrapper_passes_shellcheck(webserver_image: str) -> None:
    script = docker_cli(
        "run",
        "--rm",
        "--label",
        f"{TEST_LABEL}=images",
        "--entrypoint",
        "cat",
        webserver_image,
        "/usr/local/bin/webserver-start",
    )
    assert script.returncode == 0, script.stderr
    checked = subprocess.run(
        ["shellcheck", "-s", "sh", "-"],
        input=script.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout


def test_php_reads_its_settings_from_files_when_the_server_passes_no_environment(
    docker_client: docker.DockerClient, webservers: Webservers
) -> None:
    # OpenLiteSpeed gives lsphp none of the container's environment: the site
    # then reads /run/site-env/NAME, which the start wrapper wrote.
    container_id = webservers.start("-e", "DB_HOST=db-from-file.invalid", "-e", "DB_PASSWORD=pw1")

    code, output = in_container(
        docker_client, container_id, "env", "-i", "/usr/local/lsws/lsphp83/bin/php",
        f"{DOCROOT}/index.php", user="www-data",
    )  # fmt: skip
    assert "getaddrinfo for db-from-file.invalid failed" in output
    assert "The database is unreachable just now." in output
    code, output = in_container(
        docker_client, container_id, "cat", "/run/site-env/DB_PASSWORD", user="www-data"
    )
    assert (code, output) == (0, "pw1")
    # Nobody else reads the password.
    code, output = in_container(
        docker_client, container_id, "cat", "/run/site-env/DB_PASSWORD", user="nobody"
    )
    assert code != 0


def test_the_php_user_is_the_server_user_of_openlitespeeds_config(
    docker_client: docker.DockerClient, webservers: Webservers
) -> None:
    # What the official image has: `user` and `group` in httpd_config.conf.
    config = "serverName\nuser                      nobody\ngroup                     nogroup\n"
    script = (
        f"printf '{config}' > /usr/local/lsws/conf/httpd_config.conf"
        " && exec /usr/local/bin/webserver-start"
    )
    container_id = webservers.start("--entrypoint", "sh", command=("-c", script))

    _code, owners = in_container(
        docker_client, container_id, "stat", "-c", "%U:%G", UPLOADS, "/run/site-env"
    )
    assert owners.split() == ["nobody:nogroup", "root:nogroup"]


def test_without_openssl_the_start_stops_with_a_clear_message(
    docker_client: docker.DockerClient, webservers: Webservers
) -> None:
    script = 'rm "$(command -v openssl)" && exec /usr/local/bin/webserver-start'
    container_id = webservers.start("--entrypoint", "sh", command=("-c", script), healthy=False)

    exit_code = docker_client.api.wait(container_id, timeout=30)["StatusCode"]
    logs = docker_client.api.logs(container_id).decode(errors="replace")
    assert exit_code == 1, logs
    assert "openssl is missing" in logs
    assert "put cert.pem and key.pem in /var/www/vhosts/localhost/certs" in logs


def test_the_self_signed_certificate_names_the_sites_host_name(
    docker_client: docker.DockerClient, webservers: Webservers
) -> None:
    container_id = webservers.start("-e", "TLS_COMMON_NAME=shop.example.com")

    served = served_certificate(docker_client, container_id)
    assert "CN = shop.example.com" in served
    code, names = in_container(
        docker_client, container_id, "openssl", "x509", "-in", f"{CERTS}/cert.pem",
        "-noout", "-ext", "subjectAltName,basicConstraints",
    )  # fmt: skip
    assert code == 0, names
    assert "DNS:shop.example.com" in names
    assert "CA:FALSE" in names
    # A value that is no host name stops the start instead of making a strange certificate.
    refused = webservers.start("-e", "TLS_COMMON_NAME=a/b,DNS:x", healthy=False)
    assert docker_client.api.wait(refused, timeout=30)["StatusCode"] == 1
    assert "give a host name" in docker_client.api.logs(refused).decode(errors="replace")
