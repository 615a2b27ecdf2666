"""backup.yaml's external database over TLS, against a real MariaDB that requires it.

The server gets a certificate of a CA made here, for 127.0.0.1, and refuses
any connection without TLS (``require_secure_transport``). A dump through the
helper with ``tls: verify`` and that CA works; ``tls: off`` is refused by the
server; ``verify`` with another CA is refused by the client, before any data.
"""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import docker
import pytest

from reconciler.adapters.database_helper import ExternalTarget, helper
from reconciler.adapters.mariadb import RemoteServer, dump_database
from reconciler.errors import DatabaseError
from tests.integration.backup_stack import MARIADB, ROOT_PASSWORD, run_sql, wait_healthy

pytestmark = pytest.mark.integration

APP_PASSWORD = "tls-app-password"
TLS_DIR = "/etc/mysql/tls"


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def make_server_cert(folder: Path, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    key, request, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(request)],
        check=True, capture_output=True,
    )  # fmt: skip
    extensions = folder / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey",
         str(ca_key), "-CAcreateserial", "-days", "2", "-extfile", str(extensions),
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{TLS_DIR.lstrip('/')}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tls_server(
    docker_client: docker.DockerClient, project_name: str, tmp_path: Path
) -> Iterator[tuple[Any, int, str]]:
    """A MariaDB that requires TLS, on 127.0.0.1:PORT; with the PEM of its CA."""
    ca_key, ca_cert = make_ca(tmp_path, "test-ca")
    key, cert = make_server_cert(tmp_path, ca_key, ca_cert)
    port = free_port()
    container = docker_client.containers.create(
        MARIADB,
        command=[
            "mariadbd",
            f"--ssl-cert={TLS_DIR}/server.pem",
            f"--ssl-key={TLS_DIR}/server.key",
            f"--ssl-ca={TLS_DIR}/ca.pem",
            "--require-secure-transport=ON",
        ],
        name=f"{project_name}-tls-db",
        environment={
            "MARIADB_ROOT_PASSWORD": ROOT_PASSWORD,
            "MARIADB_DATABASE": "shop",
            "MARIADB_USER": "app",
            "MARIADB_PASSWORD": APP_PASSWORD,
        },
        ports={"3306/tcp": ("127.0.0.1", port)},
        labels={"test.purpose": "external-database-tls"},
    )
    try:
        container.put_archive(
            "/",
            archive(
                {
                    "server.pem": cert.read_bytes(),
                    "server.key": key.read_bytes(),
                    "ca.pem": ca_cert.read_bytes(),
                }
            ),
        )
        container.start()
        wait_healthy(container)
        run_sql(container, "CREATE TABLE shop.orders (id INT); INSERT INTO shop.orders VALUES (7);")
        yield container, port, ca_cert.read_text()
    finally:
        container.remove(force=True, v=True)


def dump(
    client: docker.DockerClient,
    project: str,
    port: int,
    *,
    tls: Literal["off", "required", "verify"],
    ca_pem: str = "",
) -> bytes:
    target = ExternalTarget(
        name="shopdb",
        image=MARIADB,
        network_mode="host",
        remote=RemoteServer(
            host="127.0.0.1",
            port=port,
            user="app",
            databases=("shop",),
            tls=tls,
            password=APP_PASSWORD,
        ),
        ca_pem=ca_pem,
    )
    with (
        helper(client, project=project, target=target, purpose="backup") as name,
        dump_database(client, container=name, remote=target.remote) as chunks,
    ):
        return b"".join(chunks)


def test_a_dump_over_verified_tls_works_and_without_tls_or_with_another_ca_is_refused(
    docker_client: docker.DockerClient,
    project_name: str,
    tls_server: tuple[Any, int, str],
    tmp_path: Path,
) -> None:
    _container, port, ca_pem = tls_server

    verified = dump(docker_client, project_name, port, tls="verify", ca_pem=ca_pem)
    assert b"-- Dump completed" in verified
    assert b"INSERT INTO `orders` VALUES" in verified

    encrypted = dump(docker_client, project_name, port, tls="required")
    assert b"-- Dump completed" in encrypted

    with pytest.raises(DatabaseError):
        dump(docker_client, project_name, port, tls="off")

    _other_key, other_ca = make_ca(tmp_path, "another-ca")
    with pytest.raises(DatabaseError):
        dump(docker_client, project_name, port, tls="verify", ca_pem=other_ca.read_text())
    # No helper is left behind, whatever happened.
    helpers = docker_client.containers.list(
        all=True, filters={"label": f"dev.reconciler.project={project_name}"}
    )
    assert helpers == []
