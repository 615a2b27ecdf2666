"""Checks of compose.yaml in swarm mode, and its Swarm values resolved.

Part of the *validate* step when the engine is a Swarm manager
(``load_desired_state(..., engine_mode="swarm")``): after the schema, each
service's ``deploy`` is read with ``swarm_schema.SwarmDeployConfig``; the keys
Swarm ignores or forbids are refused at their line with what to write instead
(``swarm_schema.SWARM_REFUSED``), never dropped; a service whose volume keeps
its data on one node must be pinned to one node. Then ``swarm_deploy`` resolves
a service's ``SwarmDeploy`` with the defaults the reconciler's deploys need:
updates ``start-first`` unless a port is published in host mode, and a failed
update rolled back. No I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import ValidationError

from reconciler.model import compose_schema as schema
from reconciler.model import swarm_schema as swarm
from reconciler.model.compose_checks import ComposeChecks
from reconciler.model.compose_ports import Port
from reconciler.model.desired import (
    NetworkSpec,
    PortBinding,
    RestartPolicy,
    SwarmDeploy,
    UpdatePolicy,
    keeps_data_on_its_node,
)
from reconciler.model.yaml_lines import KeyPath, pydantic_issues


def one_node_volume(volume: schema.Volume | None) -> bool:
    """Whether a top-level volume keeps its data on the node that runs the task:
    the local driver without a network file system (NFS, CIFS) under it. An
    external volume counts as such: its driver is not known here."""
    if volume is None:
        return True
    return keeps_data_on_its_node(
        external=volume.external, driver=volume.driver, driver_opts=volume.driver_opts
    )


class SwarmChecks(ComposeChecks):
    """The swarm-mode checks of one load, on the state ``ComposeChecks`` holds."""

    def _swarm_deploys(
        self, services: Mapping[str, schema.Service | None]
    ) -> dict[str, swarm.SwarmDeployConfig]:
        """Each service's ``deploy`` (its Swarm keys), validated; the default when absent
        or invalid (the issue is reported). ``resources`` and unknown keys are the
        service schema's."""
        fields = set(swarm.SwarmDeployConfig.model_fields)
        out: dict[str, swarm.SwarmDeployConfig] = {}
        for name in services:
            base: KeyPath = ("services", name, "deploy")
            raw = self._raw_at(base)
            given = {k: v for k, v in raw.items() if k in fields} if isinstance(raw, dict) else {}
            try:
                out[name] = swarm.SwarmDeployConfig.model_validate(given)
            except ValidationError as exc:
                self.issues.extend(
                    pydantic_issues(exc, self.line_map, model=swarm.SwarmDeployConfig, prefix=base)
                )
                # Without the keys in error, the rest is still checked (and resolved).
                bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
                try:
                    kept = {k: v for k, v in given.items() if k not in bad}
                    out[name] = swarm.SwarmDeployConfig.model_validate(kept)
                except ValidationError:
                    out[name] = swarm.SwarmDeployConfig()
        return out

    def _check_swarm(
        self,
        services: Mapping[str, schema.Service | None],
        volumes: Mapping[str, schema.Volume | None],
        networks: Mapping[str, schema.Network | None],
        deploys: Mapping[str, swarm.SwarmDeployConfig],
    ) -> None:
        for name, svc in services.items():
            if svc is None:
                continue
            base: KeyPath = ("services", name)
            raw = self._raw_at(base)
            given = set(raw) if isinstance(raw, dict) else set()
            for key, reason in swarm.SWARM_REFUSED.items():
                if key not in given or key in schema.UNSUPPORTED_SERVICE:
                    continue  # absent, or refused by the schema (swarm_schema.explain_extra)
                if key == "pull_policy" and svc.pull_policy == "missing":
                    continue
                self.add((*base, key), f"refused in swarm mode: {reason}")
            self._check_swarm_volumes(base, svc, volumes, deploys.get(name))
            self._check_swarm_ports(base, svc, deploys.get(name))
            deploy = deploys.get(name)
            if deploy is not None:
                self._check_labels((*base, "deploy"), deploy.labels)
        for key, network in networks.items():
            if network is not None and not network.external and network.driver == "bridge":
                self.add(("networks", key, "driver"), swarm.BRIDGE_NETWORK)

    def _check_swarm_volumes(
        self,
        base: KeyPath,
        svc: schema.Service,
        volumes: Mapping[str, schema.Volume | None],
        deploy: swarm.SwarmDeployConfig | None,
    ) -> None:
        one_node: list[str] = []
        for index, volume in enumerate(svc.volumes):
            where: KeyPath = (*base, "volumes", index)
            if volume.anonymous:
                self.add(where, f"refused in swarm mode: {swarm.ANONYMOUS_VOLUME}")
            elif volume.type == "bind":
                source = volume.source or ""
                reason = swarm.HOST_BIND if os.path.isabs(source) else swarm.REPO_BIND
                self.add(where, f"refused in swarm mode: {reason}")
            elif volume.source in volumes and one_node_volume(volumes[volume.source or ""]):
                one_node.append(volume.source or "")
        placement = deploy.placement if deploy is not None else None
        constraints = placement.constraints if placement is not None else []
        if one_node and swarm.pinned_node(constraints) is None:
            found = list(dict.fromkeys(one_node))
            names = ", ".join(repr(v) for v in found)
            which = f"volumes {names} keep their" if len(found) > 1 else f"volume {names} keeps its"
            self.add(
                (*base, "volumes"),
                f"{which} data on one node (driver local): Swarm could start "
                "the task on another node, with an empty volume there; pin the service to "
                "one node (deploy: placement: constraints: [node.hostname == NODE]), or keep "
                "the data on storage the nodes share (driver_opts type nfs or cifs)",
            )

    def _check_swarm_ports(
        self, base: KeyPath, svc: schema.Service, deploy: swarm.SwarmDeployConfig | None
    ) -> None:
        for index, port in enumerate(svc.ports):
            if port.host_ip:
                self.add((*base, "ports", index), f"refused in swarm mode: {swarm.HOST_IP}")
        if deploy is None:
            return
        modes = {port.mode or "ingress" for port in svc.ports}
        for key, options in (
            ("update_config", deploy.update_config),
            ("rollback_config", deploy.rollback_config),
        ):
            if options is not None and options.order == "start-first" and "host" in modes:
                self.add((*base, "deploy", key, "order"), swarm.HOST_PORT_START_FIRST)
        if deploy.endpoint_mode == "dnsrr" and "ingress" in modes:
            self.add(
                (*base, "deploy", "endpoint_mode"),
                "dnsrr gives the service no virtual IP, which a port published in mode "
                "ingress (the default in swarm mode) needs: publish in mode host, or write "
                "endpoint_mode: vip",
            )


def swarm_port_mode(port: Port) -> Literal["ingress", "host"]:
    """A port's publish mode in swarm mode: ingress (the routing mesh) unless host is asked."""
    return port.mode or "ingress"


def swarm_deploy(config: swarm.SwarmDeployConfig, ports: tuple[PortBinding, ...]) -> SwarmDeploy:
    """The service's ``SwarmDeploy``: what compose.yaml says, else the reconciler's defaults.

    Updates (and rollbacks) are start-first, so the old task serves until the new
    one is healthy, unless a port is published in host mode: one task per node
    may hold it, so the old one stops first.
    """
    order: Literal["start-first", "stop-first"] = (
        "stop-first" if any(port.mode == "host" for port in ports) else "start-first"
    )
    placement = config.placement or swarm.Placement()
    restart = config.restart_policy or swarm.RestartPolicyConfig()
    return SwarmDeploy(
        mode=config.mode,
        replicas=1 if config.replicas is None else config.replicas,
        constraints=tuple(placement.constraints),
        spread=tuple(preference.spread for preference in placement.preferences),
        max_replicas_per_node=placement.max_replicas_per_node or None,
        update=_policy(config.update_config, order=order, failure_action="rollback"),
        rollback=_policy(
            config.rollback_config,
            order=order,
            failure_action=_rollback_failure(config.rollback_config),
        ),
        restart_policy=RestartPolicy(
            condition=restart.condition,
            delay_s=5.0 if restart.delay is None else restart.delay,
            max_attempts=restart.max_attempts or None,
            window_s=restart.window or 0.0,
        ),
        endpoint_mode=config.endpoint_mode,
        labels=dict(config.labels),
    )


def _policy(
    options: swarm.UpdateConfig | swarm.RollbackConfig | None,
    *,
    order: Literal["start-first", "stop-first"],
    failure_action: Literal["rollback", "pause", "continue"],
) -> UpdatePolicy:
    options = options or swarm.UpdateConfig()
    return UpdatePolicy(
        parallelism=1 if options.parallelism is None else options.parallelism,
        delay_s=options.delay or 0.0,
        order=options.order or order,
        monitor_s=options.monitor,
        max_failure_ratio=options.max_failure_ratio or 0.0,
        failure_action=failure_action,
    )


def _rollback_failure(
    options: swarm.RollbackConfig | None,
) -> Literal["rollback", "pause", "continue"]:
    # Swarm's default: a failed rollback pauses, for someone to look.
    if options is None or options.failure_action is None:
        return "pause"
    return "continue" if options.failure_action == "continue" else "pause"


def swarm_network(spec: NetworkSpec, network: schema.Network | None) -> NetworkSpec:
    """A network the stack creates, for Swarm: overlay unless another driver is named,
    and attachable, so the reconciler's helpers (backups, restores) can join it."""
    if spec.external:
        return spec
    driver = network.driver if network is not None and network.driver else "overlay"
    return spec.model_copy(update={"driver": driver, "attachable": True})
