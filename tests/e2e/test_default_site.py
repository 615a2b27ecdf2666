"""The default stack's site, deployed by push: built into its image, data in volumes.

The webserver and db services of desired-state/compose.yaml as they are (the
reconciler's own service left out), site/ and images/webserver/Dockerfile from
this checkout, on the local stand-in images, through the real CLI:

- the page answers on HTTP and HTTPS (a certificate made for this install, not
  the one every copy of the base image shares), counts visits, takes a
  guestbook entry by POST only and shows it escaped;
- a commit that changes site/index.php changes the page at the next sync,
  while the guestbook and the counter stay (they are data, in the database);
- a .php file in the uploads volume is neither served nor run;
- backup.yaml as it is backs up the data; a restore brings the guestbook and
  the counter back and leaves the newer code in place.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
import yaml

from reconciler import labels
from tests.e2e.conftest import Cli, make_cli
from tests.fixtures.git_remotes import ServedRemote

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STAND_INS = {
    "reconciler-local/openlitespeed:local": "openlitespeed",
    "reconciler-local/mariadb:local": "mariadb",
}
SNAKEOIL = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
UPLOADS = "/var/www/vhosts/localhost/uploads"
DOCROOT = "/var/www/vhosts/localhost/html"
LEAD = "This site is deployed by <code>git push</code>."
_VISITS = re.compile(r'id="visits">(\d+)<')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def default_stack_files() -> dict[str, str | bytes]:
    """desired-state/ (minus the reconciler's own service), site/ and the recipe."""
    compose = yaml.safe_load((ROOT / "desired-state/compose.yaml").read_text(encoding="utf-8"))
    del compose["services"]["reconciler"]
    files: dict[str, str | bytes] = {
        "desired-state/compose.yaml": yaml.safe_dump(compose, sort_keys=False),
        "desired-state/backup.yaml": (ROOT / "desired-state/backup.yaml").read_text("utf-8"),
        "desired-state/restore.yaml": "restores: []\n",
        "images/webserver/Dockerfile": (ROOT / "images/webserver/Dockerfile").read_bytes(),
    }
    for path in sorted((ROOT / "site").rglob("*")):
        if path.is_file():
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    return files


class Site:
    """The deployed site, seen from outside (its published ports) and inside."""

    def __init__(self, client: docker.DockerClient, project: str, http: int, https: int) -> None:
        self.client = client
        self.project = project
        self.url = f"http://127.0.0.1:{http}/"
        self.https = https

    def container(self) -> Any:
        return self.client.containers.get(labels.container_name(self.project, "webserver"))

    def get(self) -> requests.Response:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(self.url, timeout=10)
                if answer.status_code != 503 or time.monotonic() > deadline:
                    return answer
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def visits(self) -> int:
        page = self.get()
        assert page.status_code == 200, page.text
        found = _VISITS.search(page.text)
        assert found is not None, page.text
        return int(found.group(1))

    def get_https(self) -> str:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # self-signed on purpose
        with urllib.request.urlopen(f"https://127.0.0.1:{self.https}/", context=context) as page:
            return str(page.read().decode())

    def served_certificate(self) -> str:
        return ssl.get_server_certificate(("127.0.0.1", self.https)).strip()

    def exec(self, *command: str, user: str = "root") -> str:
        result = self.container().exec_run(list(command), user=user)
        assert result.exit_code == 0, result.output
        return str(result.output.decode())

    def sign(self, name: str, message: str) -> requests.Response:
        return requests.post(
            self.url, data={"name": name, "message": message}, allow_redirects=False, timeout=10
        )


@dataclass
class Deployed:
    cli: Cli
    remote: ServedRemote
    site: Site


@pytest.fixture
def deployed(
    tmp_path: Path, git_daemon: ServedRemote, docker_client: docker.DockerClient, project_name: str
) -> Iterator[Deployed]:
    for image, only in STAND_INS.items():
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(
                f"{image} is missing: run images/local/build-base-images.sh --only {only}",
                pytrace=False,
            )
    http, https = free_port(), free_port()
    cli = make_cli(
        tmp_path,
        repo_url=git_daemon.url,
        project=project_name,
        extra={
            "WEBSERVER_BASE_IMAGE": "reconciler-local/openlitespeed:local",
            "MARIADB_IMAGE": "reconciler-local/mariadb:local",
            "MARIADB_ROOT_PASSWORD": "root-pw-e2e",
            "MARIADB_PASSWORD": "site-pw-e2e",
            "HTTP_PORT": str(http),
            "HTTPS_PORT": str(https),
            "BACKUP_TARGET": f"file://{tmp_path}/backups",
        },
    )
    git_daemon.commit_files(default_stack_files(), message="the default stack")
    cli.run("sync", check=True, timeout=600)
    yield Deployed(cli, git_daemon, Site(docker_client, project_name, http, https))
    for image in docker_client.api.images(
        filters={"label": f"{labels.IMAGE_PROJECT}={project_name}"}
    ):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_image(image["Id"], force=True)


def test_the_default_site_deploys_by_push_and_keeps_its_data(deployed: Deployed) -> None:
    cli, remote, site = deployed.cli, deployed.remote, deployed.site

    # HTTP and HTTPS, the counter counting.
    first = site.visits()
    assert site.visits() == first + 1
    assert LEAD in site.get_https()
    served = site.served_certificate()
    assert served == site.exec("cat", "/var/www/vhosts/localhost/certs/cert.pem").strip()
    assert served != site.exec("cat", SNAKEOIL).strip()
    assert "reconciler self-signed" in site.exec(
        "openssl", "x509", "-noout", "-subject", "-in", "/var/www/vhosts/localhost/certs/cert.pem"
    )

    # The guestbook: written by POST, then a redirect; shown escaped.
    signed = site.sign("Ada <b>", "Hello & <script>alert(1)</script>")
    assert signed.status_code == 303
    page = site.get().text
    assert "Hello &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Ada &lt;b&gt;" in page
    assert "<script>alert" not in page
    # A GET never writes; an empty or too long entry is refused.
    requests.get(site.url, params={"name": "Eve", "message": "by GET"}, timeout=10)
    assert site.sign("", "no name").status_code == 422
    assert site.sign("Bob", "x" * 501).status_code == 422
    page = site.get().text
    assert "by GET" not in page
    assert "no name" not in page

    # The docroot is site/ as committed, nothing else (no Dockerfile the build saw).
    files = sorted(p.relative_to(ROOT / "site").as_posix() for p in (ROOT / "site").rglob("*"))
    assert site.exec("sh", "-c", f"cd {DOCROOT} && find . -mindepth 1 | sort").split() == [
        f"./{name}" for name in files
    ]

    # An upload is data: PHP's user writes it, nobody can fetch or run it.
    assert "uploads folder writable." in page
    # The marker only PHP's arithmetic makes: Apache's 404 page names the port, which may hold "42".
    site.exec(
        "sh",
        "-c",
        f'echo \'<?php echo "ran-" . (6*7) . "-php";\' > {UPLOADS}/evil.php',
        user="www-data",
    )
    for path in ("uploads/evil.php", "../uploads/evil.php"):
        answer = requests.get(site.url + path, timeout=10)
        assert answer.status_code == 404, (path, answer.text)
        assert "ran-42-php" not in answer.text

    # A backup of the data as backup.yaml says.
    backed_up = cli.run("backup", "run", timeout=600)
    assert backed_up.returncode == 0, backed_up.stderr[-3000:]
    visits_at_backup = site.visits() - 1

    # A commit that changes the page: the next sync rebuilds and runs it.
    old_image = site.container().image.id
    index = (ROOT / "site/index.php").read_text(encoding="utf-8")
    remote.commit_files(
        {"site/index.php": index.replace(LEAD, "Changed by a commit, deployed by push.")},
        message="new page text",
    )
    cli.run("sync", check=True, timeout=600)
    assert site.container().image.id != old_image
    page = site.get().text
    assert "Changed by a commit, deployed by push." in page
    assert LEAD not in page
    # The data stayed: the entry and the counter (now past the backup's).
    assert "Ada &lt;b&gt;" in page
    site.sign("Later", "after the backup")
    assert site.visits() > visits_at_backup + 2

    # A restore brings the data back and leaves the new code running.
    restored = cli.run("restore", "latest", "--yes", "--id", "site-e2e", timeout=600)
    assert restored.returncode == 0, restored.stderr[-3000:]
    page = site.get().text
    assert "Changed by a commit, deployed by push." in page
    assert "Ada &lt;b&gt;" in page
    assert "after the backup" not in page
    assert site.visits() == visits_at_backup + 2
    # The upload came back with the uploads volume; still never served.
    assert "evil.php" in site.exec("ls", UPLOADS)
