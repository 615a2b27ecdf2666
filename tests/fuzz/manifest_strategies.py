"""Hypothesis strategies for the desired-state files: raw text, any YAML tree, near-valid files.

Three levels, each reaching deeper into the loaders:

- ``yaml_text``/``binary``: anything at all, for the reader and the YAML parser;
- ``yaml_trees``: any tree YAML can hold, with the supported key names mixed
  in, for the schema;
- ``compose_files`` / ``backup_files`` / ``restore_files``: files built from
  the supported keys (docs/compose-subset.md, model/compose_schema.py and its
  compose_*.py siblings) whose values are mostly plausible and sometimes wrong,
  for the checks behind the schema (ports, volumes, depends_on cycles,
  networks, health checks, env files, build contexts).

``CHECKOUT`` lists the files every example's checkout holds, so that relative
paths in the generated files sometimes exist and sometimes do not.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

# --- anything -------------------------------------------------------------------

# Characters that mean something to YAML or to ${VAR} interpolation, so random
# text often reaches past the first character of the parser.
_YAML_ALPHABET = st.sampled_from(list(" \n\t:-[]{}&*!|>'\"#%@`,?$\\/.=~0123456789abcxyz_"))
yaml_text = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=200),
    st.text(_YAML_ALPHABET, max_size=200),
)
binary = st.binary(max_size=200)

COMPOSE_KEYS = [
    "name",
    "services",
    "volumes",
    "networks",
    "version",
    "image",
    "build",
    "ports",
    "environment",
    "env_file",
    "depends_on",
    "healthcheck",
    "restart",
    "labels",
    "profiles",
    "command",
    "entrypoint",
    "user",
    "working_dir",
    "hostname",
    "stop_grace_period",
    "pull_policy",
    "context",
    "dockerfile",
    "args",
    "target",
    "published",
    "host_ip",
    "protocol",
    "mode",
    "type",
    "source",
    "read_only",
    "aliases",
    "condition",
    "required",
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "disable",
    "external",
    "driver",
    "driver_opts",
    "internal",
    "path",
    "x-ext",
    "<<",
    "privileged",
    "restores",
    "id",
    "backup",
    "databases",
    "service",
    "schedule",
    "every",
    "at",
    "timezone",
    "retention",
    "daily",
    "weekly",
    "monthly",
    "stop_services",
    "restore_drill",
]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["${A}", "$$", "${A:-x}", "$", "web", "db", "80:80", "./x:/y", "1m"]),
)
_keys = st.one_of(
    st.sampled_from(COMPOSE_KEYS),
    st.text(st.characters(codec="utf-8"), max_size=10),
    st.integers(-5, 5),
    st.booleans(),
)
yaml_trees = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_keys, children, max_size=5),
    ),
    max_leaves=40,
)

# --- the checkout ------------------------------------------------------------------

DIRECTORY = "desired-state"
CHECKOUT: dict[str, str] = {
    f"{DIRECTORY}/app.env": "APP_MODE=production\nFROM_ENV\nQUOTED='a b'\n",
    f"{DIRECTORY}/broken.env": "=no key\nexport X=1\n#c\n'unterminated\n",
    f"{DIRECTORY}/site/index.html": "<h1>hi</h1>\n",
    f"{DIRECTORY}/config.ini": "[a]\nb=c\n",
    "images/web/Dockerfile": "FROM scratch\n",
    "images/web/app.py": "print('hi')\n",
    "images/nodockerfile/README": "no Dockerfile here\n",
    "outside.env": "OUT=1\n",
}

# Variables of the environment the loader is given; values are never checked.
ENVIRON_POOL = {
    "IMG": "reconciler-local/busybox:latest",
    "PORT": "8080",
    "EMPTY": "",
    "PASS": "s3cret-value",
    "FROM_ENV": "x",
    "COMPOSE_PROFILES": "admin",
    "RESTART": "always",
}
environs = st.dictionaries(st.sampled_from(sorted(ENVIRON_POOL)), st.just(""), max_size=5).map(
    lambda keys: {key: ENVIRON_POOL[key] for key in keys}
)

# --- compose.yaml, near valid ----------------------------------------------------

SERVICE_NAMES = ["web", "db", "php", "admin", "job", "Bad Name", "a.b-c_d"]
VOLUME_KEYS = ["data", "site", "logs", "shared"]
NETWORK_KEYS = ["front", "back", "default", "proxy"]

_images = st.sampled_from(
    [
        "nginx:1.27",
        "reconciler-local/busybox:latest",
        "mariadb:11.4",
        "${IMG}",
        "${IMG:-busybox}",
        "${MISSING}",
        "",
        "x@sha256:abc",
    ]
)
_durations = st.one_of(
    st.sampled_from(["10s", "1m30s", "500ms", "0", "1h", "1.5s", "10", "s", "-1s", "1d", ""]),
    st.integers(-5, 100),
    st.floats(allow_nan=True),
)
_port_numbers = st.one_of(
    st.integers(-1, 70000), st.sampled_from(["80", "8000-8002", "8002-8000", "0", "x", "${PORT}"])
)


@st.composite
def _short_ports(draw: st.DrawFn) -> str:
    host_ip = draw(st.sampled_from(["", "127.0.0.1:", "0.0.0.0:", "[::1]:", "bogus:", "[::1"]))
    published = draw(st.sampled_from(["", "8080:", "8080-8081:", "80:", "99999:", "${PORT}:"]))
    target = draw(st.sampled_from(["80", "80-81", "0", "443", "a"]))
    protocol = draw(st.sampled_from(["", "/tcp", "/udp", "/sctp"]))
    return f"{host_ip}{published}{target}{protocol}"


_ports = st.one_of(
    _short_ports(),
    _port_numbers,
    st.fixed_dictionaries(
        {"target": _port_numbers},
        optional={
            "published": _port_numbers,
            "host_ip": st.sampled_from(["127.0.0.1", "::1", "x", ""]),
            "protocol": st.sampled_from(["tcp", "udp", "icmp"]),
            "mode": st.sampled_from(["host", "ingress"]),
        },
    ),
)
_volume_sources = st.sampled_from(
    [
        *VOLUME_KEYS,
        "undeclared",
        "./site",
        "./config.ini",
        "./missing",
        "../images/web",
        "../../etc",
        "/srv/data",
        "~/x",
        "",
        "./site/../../..",
    ]
)
_volume_targets = st.sampled_from(["/data", "/var/www/html", "relative", "", "/a:b"])


@st.composite
def _short_volumes(draw: st.DrawFn) -> str:
    parts = [draw(_volume_sources), draw(_volume_targets)]
    parts += draw(st.lists(st.sampled_from(["ro", "rw", "z", "nocopy"]), max_size=2))
    return ":".join(parts)


_volumes = st.one_of(
    _short_volumes(),
    st.sampled_from(["/anonymous", "data"]),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["volume", "bind", "tmpfs"]), "target": _volume_targets},
        optional={"source": _volume_sources, "read_only": st.booleans()},
    ),
)
_service_refs = st.sampled_from([*SERVICE_NAMES, "unknown", "wbe"])
_depends = st.one_of(
    st.lists(_service_refs, max_size=3),
    st.dictionaries(
        _service_refs,
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "condition": st.sampled_from(
                        [
                            "service_started",
                            "service_healthy",
                            "service_completed_successfully",
                            "started",
                        ]
                    ),
                    "required": st.booleans(),
                    "restart": st.booleans(),
                },
            ),
        ),
        max_size=3,
    ),
)
_network_refs = st.sampled_from([*NETWORK_KEYS, "undeclared"])
_service_networks = st.one_of(
    st.lists(_network_refs, max_size=3),
    st.dictionaries(
        _network_refs,
        st.one_of(st.none(), st.fixed_dictionaries({"aliases": st.lists(st.text(max_size=5))})),
        max_size=3,
    ),
)
_tests = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            ["CMD", "true"],
            ["CMD-SHELL", "exit 0"],
            ["NONE"],
            ["NONE", "x"],
            ["CMD"],
            ["WRONG", "x"],
            [],
        ]
    ),
)
_healthchecks = st.fixed_dictionaries(
    {},
    optional={
        "test": _tests,
        "interval": _durations,
        "timeout": _durations,
        "retries": st.integers(-2, 10),
        "start_period": _durations,
        "start_interval": _durations,
        "disable": st.booleans(),
    },
)
_env_files = st.one_of(
    st.sampled_from(
        ["app.env", "broken.env", "missing.env", "../outside.env", "/etc/passwd", "site"]
    ),
    st.lists(
        st.one_of(
            st.sampled_from(["app.env", "missing.env"]),
            st.fixed_dictionaries(
                {"path": st.sampled_from(["app.env", "missing.env", "../../x.env"])},
                optional={"required": st.booleans()},
            ),
        ),
        max_size=3,
    ),
)
_contexts = st.sampled_from(
    [
        "../images/web",
        "../images/nodockerfile",
        "../images/missing",
        "http://example.com/x.git",
        "git@host:x",
        "/abs",
        ".",
        "../..",
        "site",
    ]
)
_builds = st.one_of(
    _contexts,
    st.fixed_dictionaries(
        {},
        optional={
            "context": _contexts,
            "dockerfile": st.sampled_from(["Dockerfile", "Missingfile", "../web/Dockerfile"]),
            "args": st.one_of(
                st.lists(st.sampled_from(["A=1", "FROM_ENV", "=x", "B="]), max_size=3),
                st.dictionaries(st.sampled_from(["A", "FROM_ENV"]), _scalars, max_size=2),
            ),
            "target": st.sampled_from(["prod", ""]),
        },
    ),
)
_environment = st.one_of(
    st.lists(
        st.sampled_from(["A=1", "PASS", "FROM_ENV", "B=${PASS}", "=x", "C=$", "D"]), max_size=4
    ),
    st.dictionaries(st.sampled_from(["A", "PASS", "B", "FROM_ENV"]), _scalars, max_size=4),
)
_labels = st.one_of(
    st.lists(st.sampled_from(["a=b", "dev.reconciler.project=x", "c"]), max_size=3),
    st.dictionaries(st.sampled_from(["a", "dev.reconciler.owner"]), _scalars, max_size=2),
)
_SERVICE_KEYS: dict[str, st.SearchStrategy[Any]] = {
    "image": _images,
    "build": _builds,
    "pull_policy": st.sampled_from(["missing", "always", "never", "build", "if_not_present", "x"]),
    "command": st.one_of(
        st.sampled_from(["sleep 3600", "sh -c 'unclosed", ["a", 1, True]]), st.text()
    ),
    "entrypoint": st.sampled_from(["/bin/sh", ["sh", "-c"], ""]),
    "environment": _environment,
    "env_file": _env_files,
    "ports": st.lists(_ports, max_size=3),
    "volumes": st.lists(_volumes, max_size=3),
    "networks": _service_networks,
    "depends_on": _depends,
    "healthcheck": _healthchecks,
    "restart": st.sampled_from(
        ["no", "always", "on-failure", "on-failure:3", "unless-stopped", "sometimes", "${RESTART}"]
    ),
    "labels": _labels,
    "user": st.sampled_from(["1000", "www-data", 1000]),
    "working_dir": st.sampled_from(["/app", "relative"]),
    "hostname": st.sampled_from(["web", ""]),
    "profiles": st.one_of(
        st.sampled_from(["admin", "debug"]),
        st.lists(st.sampled_from(["admin", "debug"]), max_size=2),
    ),
    "stop_grace_period": _durations,
    # The runtime keys: plausible values and the mistakes users make.
    "expose": st.lists(st.sampled_from([3000, "8000-8001/udp", "x", 70000, "80/http"]), max_size=3),
    "stop_signal": st.sampled_from(["SIGTERM", "SIGQUIT", "kill me", 9]),
    "cap_add": st.lists(st.sampled_from(["NET_ADMIN", "ALL", "bad cap"]), max_size=2),
    "cap_drop": st.lists(st.sampled_from(["MKNOD", ""]), max_size=2),
    "init": st.booleans(),
    "tmpfs": st.one_of(
        st.sampled_from(["/run", "rel"]), st.lists(st.sampled_from(["/run:size=1m", "/tmp"]))
    ),
    "shm_size": st.sampled_from(["64m", "1gb", "1.5GiB", "x", -1, 1.5, 1024, ""]),
    "extra_hosts": st.one_of(
        st.lists(st.sampled_from(["a:1.2.3.4", "b=::1", "nocolon", "c:x", "d:host-gateway"])),
        st.dictionaries(
            st.sampled_from(["a", "b"]), st.sampled_from(["1.2.3.4", "nope", ["::1"]]), max_size=2
        ),
    ),
    "read_only": st.booleans(),
    "security_opt": st.lists(st.sampled_from(["no-new-privileges:true", ""]), max_size=2),
    "ulimits": st.dictionaries(
        st.sampled_from(["nofile", "nproc", "bogus"]),
        st.one_of(
            st.integers(-2, 4096),
            st.fixed_dictionaries({"soft": st.integers(-2, 10), "hard": st.integers(-2, 10)}),
        ),
        max_size=2,
    ),
    "sysctls": st.one_of(
        st.lists(st.sampled_from(["net.core.somaxconn=1024", "novalue", "=x"]), max_size=2),
        st.dictionaries(st.sampled_from(["net.core.somaxconn"]), _scalars, max_size=1),
    ),
    "logging": st.fixed_dictionaries(
        {},
        optional={
            "driver": st.sampled_from(["json-file", "local", ""]),
            "options": st.dictionaries(st.sampled_from(["max-size", "max-file"]), _scalars),
        },
    ),
    "mem_limit": st.sampled_from(["512m", "1g", "lots", 0, -5]),
    "mem_reservation": st.sampled_from(["128m", 1.5]),
    "cpus": st.sampled_from([0.5, "1.5", 0, "x", float("inf")]),
    "pids_limit": st.sampled_from([100, -1, -2, "x"]),
    "deploy": st.fixed_dictionaries(
        {},
        optional={
            "resources": st.fixed_dictionaries(
                {},
                optional={
                    "limits": st.fixed_dictionaries(
                        {},
                        optional={
                            "memory": st.sampled_from(["512m", "x"]),
                            "cpus": st.sampled_from(["0.5", 2]),
                            "pids": st.sampled_from([50, "y"]),
                        },
                    ),
                    "reservations": st.fixed_dictionaries(
                        {}, optional={"memory": st.sampled_from(["64m"]), "cpus": st.just(1)}
                    ),
                },
            ),
            "replicas": st.just(2),
        },
    ),
    "stdin_open": st.booleans(),
    "tty": st.booleans(),
    "network_mode": st.sampled_from(
        ["host", "none", "service:db", "service:web", "service:unknown", "container:x", "bridge"]
    ),
    "container_name": st.sampled_from(["front", "shop-db-1", "-bad", "x", "shop-helper-x"]),
    "privileged": st.just(True),  # unsupported: an error that says so
    "imagee": st.just("typo"),
    "x-note": yaml_trees,
}


def _maybe_broken(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the plausible values, sometimes anything at all (a mutation)."""
    return st.one_of(strategy, strategy, strategy, yaml_trees)


_services = st.fixed_dictionaries(
    {"image": _maybe_broken(_images)},
    optional={key: _maybe_broken(v) for key, v in _SERVICE_KEYS.items() if key != "image"},
)
_top_volumes = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["all-logs", "bad name", "", "${PASS}"]),
            "external": st.booleans(),
            "driver": st.sampled_from(["local", "nfs"]),
            "driver_opts": st.dictionaries(st.sampled_from(["type", "o"]), _scalars, max_size=2),
            "labels": _labels,
        },
    ),
)
_top_networks = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["traefik", "bad name", ""]),
            "external": st.booleans(),
            "driver": st.sampled_from(["bridge", "overlay"]),
            "internal": st.booleans(),
            "labels": _labels,
            "ipam": st.just({}),
        },
    ),
)
compose_files = st.fixed_dictionaries(
    {
        "services": _maybe_broken(
            st.dictionaries(st.sampled_from(SERVICE_NAMES), _services, min_size=1, max_size=4)
        ),
    },
    optional={
        "name": _maybe_broken(st.sampled_from(["shop", "Shop", "-x", "", "${MISSING}", "a_b-1"])),
        "volumes": _maybe_broken(
            st.dictionaries(st.sampled_from(VOLUME_KEYS), _maybe_broken(_top_volumes), max_size=4)
        ),
        "networks": _maybe_broken(
            st.dictionaries(st.sampled_from(NETWORK_KEYS), _maybe_broken(_top_networks), max_size=4)
        ),
        "version": st.just("3.8"),
        "secrets": st.just({}),
        "x-defaults": yaml_trees,
    },
)

# --- backup.yaml and restore.yaml, near valid --------------------------------------

_targets = st.sampled_from(
    [
        "s3://bucket/prefix",
        "s3://Bucket",
        "s3://a",
        "s3://bucket..x/p",
        "file:///var/backups",
        "file://host/x",
        "file:relative",
        "http://x",
        "",
        "${MISSING}",
        "s3://${PASS}/x",
    ]
)
_volume_names = st.sampled_from([*VOLUME_KEYS, "db", "sitee", ""])
_service_names = st.sampled_from(["db", "web", "unknown", ""])
backup_files = st.fixed_dictionaries(
    {},
    optional={
        "target": _maybe_broken(_targets),
        "schedule": _maybe_broken(
            st.fixed_dictionaries(
                {},
                optional={
                    "every": st.sampled_from(["day", "week"]),
                    "at": st.sampled_from(["05:04", "24:00", "5:04", "05:04:00", ""]),
                    "timezone": st.one_of(
                        st.sampled_from(
                            [
                                "UTC",
                                "Europe/Bucharest",
                                "America",
                                "",
                                ".",
                                "..",
                                "zone.tab",
                                "Etc/../UTC",
                                "UTC/",
                                "posixrules",
                                "/etc/localtime",
                                "x" * 300,
                            ]
                        ),
                        st.text(max_size=20),
                    ),
                },
            )
        ),
        "volumes": _maybe_broken(
            st.lists(
                st.one_of(
                    _volume_names,
                    st.fixed_dictionaries(
                        {"name": _volume_names}, optional={"stop_services": st.booleans()}
                    ),
                ),
                max_size=3,
            )
        ),
        "databases": _maybe_broken(
            st.lists(
                st.one_of(_service_names, st.fixed_dictionaries({"service": _service_names})),
                max_size=3,
            )
        ),
        "retention": _maybe_broken(
            st.fixed_dictionaries(
                {},
                optional={
                    key: st.one_of(st.integers(-3, 10**20), st.text(max_size=3))
                    for key in ("daily", "weekly", "monthly")
                },
            )
        ),
        "restore_drill": _maybe_broken(
            st.one_of(st.none(), st.fixed_dictionaries({"every": st.sampled_from(["week", "x"])}))
        ),
    },
)
_requests = st.fixed_dictionaries(
    {"id": _maybe_broken(st.sampled_from(["r1", "r2", "2026-11-27-x", "-bad", "", "a" * 101]))},
    optional={
        "backup": st.sampled_from(["latest", "2026-11-27T05-04-00Z", "yesterday", ""]),
        "source": _targets,
        "volumes": st.lists(_volume_names, max_size=3),
        "databases": st.lists(_service_names, max_size=3),
        "extra": st.just(1),
    },
)
restore_files = st.fixed_dictionaries(
    {"restores": _maybe_broken(st.lists(_maybe_broken(_requests), max_size=4))},
    optional={"other": yaml_trees},
)

# --- compose.yaml, valid, then at most one mutation ----------------------------------

_GOOD_PORTS: list[Any] = [
    "80",
    "127.0.0.1:8080:80",
    "8081:80/udp",
    "[::1]:8082:80",
    "127.0.0.1::80",
    "9000-9001:90-91",
    {"target": 443, "published": 8443, "host_ip": "127.0.0.1"},
]
_good_health = st.one_of(
    st.fixed_dictionaries(
        {"test": st.sampled_from(["true", ["CMD", "true"], ["CMD-SHELL", "exit 0"]])},
        optional={"interval": st.just("5s"), "retries": st.integers(0, 5)},
    ),
    st.just({"disable": True}),
)


@st.composite
def valid_compose_files(draw: st.DrawFn) -> dict[str, Any]:
    """A compose.yaml that loads: declared references, no cycle, distinct host ports."""
    names = draw(st.lists(st.sampled_from(SERVICE_NAMES[:5]), min_size=1, max_size=4, unique=True))
    volumes = draw(st.lists(st.sampled_from(VOLUME_KEYS), max_size=3, unique=True))
    networks = draw(st.lists(st.sampled_from(NETWORK_KEYS[:2]), max_size=2, unique=True))
    ports = draw(st.permutations(_GOOD_PORTS))
    services: dict[str, Any] = {}
    for index, name in enumerate(names):
        service: dict[str, Any] = {
            "image": draw(_images.filter(lambda i: "MISSING" not in i and i))
        }
        if draw(st.booleans()):
            service["build"] = "../images/web"
        if index < len(ports) and draw(st.booleans()):
            service["ports"] = [ports[index]]
        if draw(st.booleans()) and volumes:
            mode = draw(st.sampled_from(["", ":ro"]))
            volume = draw(st.sampled_from(volumes))
            service["volumes"] = [f"{volume}:/data{mode}", "./site:/site"]
        if draw(st.booleans()) and networks:
            service["networks"] = draw(st.lists(st.sampled_from(networks), min_size=1, unique=True))
        if index and draw(st.booleans()):
            earlier = draw(st.lists(st.sampled_from(names[:index]), min_size=1, unique=True))
            service["depends_on"] = {dep: {"condition": "service_started"} for dep in earlier}
        if draw(st.booleans()):
            service["healthcheck"] = draw(_good_health)
        if draw(st.booleans()):
            service["env_file"] = ["app.env", {"path": "missing.env", "required": False}]
            service["environment"] = {"A": "1", "B": "${EMPTY:-x}"}
        service["restart"] = draw(st.sampled_from(["no", "always", "on-failure:3"]))
        services[name] = service
    compose: dict[str, Any] = {"name": "shop", "services": services}
    if volumes:
        compose["volumes"] = dict.fromkeys(volumes)
    if networks:
        compose["networks"] = dict.fromkeys(networks)
    return compose


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """``base``, with one value replaced by anything, one value deleted, or untouched."""
    # A copy: values drawn from st.just() and sampled_from() are shared objects.
    tree = copy.deepcopy(draw(base))
    paths = _paths(tree)
    how = draw(st.sampled_from(["none", "replace", "delete"]))
    if how == "none" or not paths:
        return tree
    path = draw(st.sampled_from(paths))
    parent: Any = tree
    for part in path[:-1]:
        parent = parent[part]
    if how == "replace":
        parent[path[-1]] = draw(yaml_trees)
    else:
        del parent[path[-1]]
    return tree


@st.composite
def aliased_yaml(draw: st.DrawFn) -> str:
    """A compose.yaml using anchors, aliases and merge keys (``<<: *defaults``), rightly or not."""
    anchors = draw(
        st.dictionaries(
            st.sampled_from(["a", "b", "c"]),
            st.one_of(yaml_trees, st.just({"image": "web", "restart": "always"})),
            min_size=1,
            max_size=3,
        )
    )
    lines = [
        f"x-{name}: &{name} {json.dumps(value, default=str)}" for name, value in anchors.items()
    ]
    refs = st.sampled_from([*(f"*{name}" for name in anchors), "*missing"])
    lines += ["name: shop", "services:", "  web:"]
    if draw(st.booleans()):
        lines.append(f"    <<: {draw(refs)}")
    if draw(st.booleans()):
        lines.append(f"    <<: [{draw(refs)}, {draw(refs)}]")
    lines.append(
        f"    {draw(st.sampled_from(['image', 'command', 'environment', 'ports']))}: {draw(refs)}"
    )
    lines.append(f"    labels: {draw(refs)}")
    return "\n".join(lines) + "\n"
