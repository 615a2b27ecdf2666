"""Swarm mode on a one-node Swarm, by the real CLI from a git remote: a stack deploys
as Swarm services, a version that fails its health check is rolled back by Swarm
and reported as a failed deploy, and what is no longer declared goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler import labels
from tests.e2e.conftest import Cli, make_cli
from tests.e2e.test_docker_api_endpoints import documented_endpoints
from tests.fixtures.docker_engine import BUSYBOX_IMAGE
from tests.fixtures.docker_proxy import RecordingDockerProxy, normalise
from tests.fixtures.git_remotes import GitWorkRepo

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

SERVE = "mkdir -p /www && cp /run/page.html /www/index.html && exec httpd -f -p 8080 -h /www"
IDLE = "trap 'exit 0' TERM; sleep 100000 & wait"


def stack(*, page_check: str = "/", with_worker: bool = True) -> dict[str, Any]:
    services: dict[str, Any] = {
        "web": {
            "image": BUSYBOX_IMAGE,
            "command": ["sh", "-c", SERVE],
            "configs": [{"source": "page", "target": "/run/page.html"}],
            "secrets": ["token"],
            "healthcheck": {
                "test": [
                    "CMD",
                    "wget",
                    "-q",
                    "-O",
                    "/dev/null",
                    f"http://127.0.0.1:8080{page_check}",
                ],
                "interval": "1s",
                "timeout": "1s",
                "retries": 2,
            },
            "deploy": {"replicas": 2},
        },
    }
    if with_worker:
        services["worker"] = {"image": BUSYBOX_IMAGE, "command": ["sh", "-c", IDLE]}
    return {
        "services": services,
        "configs": {"page": {"file": "./page.html"}},
        "secrets": {"token": {"file": "./token.txt"}},
    }


def commit(repo: GitWorkRepo, data: dict[str, Any], *, page: str, message: str) -> None:
    repo.commit_files(
        {
            "desired-state/compose.yaml": yaml.safe_dump(data, sort_keys=False),
            "desired-state/page.html": page,
            "desired-state/token.txt": "s3cret-token\n",
        },
        message=message,
    )


def services_of(client: docker.DockerClient, project: str) -> dict[str, dict[str, Any]]:
    listed = client.api.services(filters={"label": f"{labels.PROJECT}={project}"})
    return {s["Spec"]["Labels"][labels.SERVICE]: s for s in listed}


def running_tasks(client: docker.DockerClient, service_id: str) -> list[dict[str, Any]]:
    return [
        t
        for t in client.api.tasks(filters={"service": service_id, "desired-state": "running"})
        if t["Status"]["State"] == "running"
    ]


def served_page(client: docker.DockerClient, service_id: str) -> str:
    (task, *_) = running_tasks(client, service_id)
    container = client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
    code, output = container.exec_run(["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"])
    assert code == 0, output
    return bytes(output).decode()


def config_names(client: docker.DockerClient, project: str) -> set[str]:
    return {
        c["Spec"]["Name"]
        for c in client.api.configs(filters={"label": f"{labels.PROJECT}={project}"})
    }


def sync(cli: Cli) -> Any:
    return cli.run("sync", timeout=600)


def test_a_stack_deploys_on_swarm_and_a_failing_update_is_rolled_back_and_reported(
    tmp_path: Path,
    git_workrepo: GitWorkRepo,
    swarm: docker.DockerClient,
    swarm_project: str,
) -> None:
    project = swarm_project
    # Every Docker API call goes through a recording relay: docs/security.md lists them.
    with RecordingDockerProxy(tmp_path / "docker.sock") as proxy:
        cli = make_cli(
            tmp_path,
            repo_url=str(git_workrepo.remote),
            project=project,
            extra={"DOCKER_HOST": proxy.docker_host},
        )
        deploy_update_and_prune(cli, git_workrepo, swarm, project)
        calls = list(proxy.calls)
    seen = {normalise(method, target) for method, target in calls}
    assert "POST /services/{id}/update" in seen
    missing = sorted(seen - set(documented_endpoints()))
    assert not missing, f"Docker API calls missing from the table of docs/security.md: {missing}"


def deploy_update_and_prune(
    cli: Cli, git_workrepo: GitWorkRepo, swarm: docker.DockerClient, project: str
) -> None:

    # The first commit: two replicas of web, a worker, a config and a secret.
    commit(git_workrepo, stack(), page="first page\n", message="first")
    first = sync(cli)
    assert first.returncode == 0, first.stderr[-3000:]
    services = services_of(swarm, project)
    assert set(services) == {"web", "worker"}
    web = services["web"]
    assert web["Spec"]["Name"] == f"{project}_web"
    assert web["Spec"]["Labels"]["com.docker.stack.namespace"] == project
    assert web["Spec"]["UpdateConfig"]["Order"] == "start-first"
    assert web["Spec"]["UpdateConfig"]["FailureAction"] == "rollback"
    assert len(running_tasks(swarm, web["ID"])) == 2
    assert served_page(swarm, web["ID"]) == "first page\n"
    first_configs = config_names(swarm, project)
    assert len(first_configs) == 1
    # The secret's name carries no plain digest of its content.
    (secret,) = swarm.api.secrets(filters={"label": f"{labels.PROJECT}={project}"})
    assert secret["Spec"]["Name"].startswith(f"{project}_token_")
    # Nothing to do on the next pass.
    planned = cli.run("plan")
    assert planned.returncode == 0, planned.stderr
    assert "nothing to do" in planned.stdout, planned.stdout
    first_commit = web["Spec"]["Labels"][labels.COMMIT]

    # A version whose health check fails: Swarm rolls it back; the deploy failed.
    commit(git_workrepo, stack(page_check="/missing"), page="broken page\n", message="broken")
    broken = sync(cli)
    assert broken.returncode != 0, broken.stdout
    assert "rolled it back to the previous version" in broken.stderr, broken.stderr[-3000:]
    status = cli.status()
    assert status["last_result"] == "failed"
    web = services_of(swarm, project)["web"]
    assert web["Spec"]["Labels"][labels.COMMIT] == first_commit
    assert served_page(swarm, web["ID"]) == "first page\n"
    assert len(running_tasks(swarm, web["ID"])) == 2

    # A good version, without the worker: updated, the worker removed, the
    # config of the refused version pruned; the one a rollback needs is kept.
    commit(git_workrepo, stack(with_worker=False), page="third page\n", message="third")
    third = sync(cli)
    assert third.returncode == 0, third.stderr[-3000:]
    again = sync(cli)
    assert again.returncode == 0, again.stderr[-3000:]
    services = services_of(swarm, project)
    assert set(services) == {"web"}
    web = services["web"]
    assert served_page(swarm, web["ID"]) == "third page\n"
    configs = config_names(swarm, project)
    assert len(configs) == 2
    assert first_configs <= configs
