"""The table of commands: each one's group module and its one-line help.

``reconciler --help`` lists every command from this table alone; the group
module that implements a command is imported only when that command runs, so
``reconciler sync`` does not pay for importing restic, boto3 and the restore
engine (``bench/noop_sync_bench.py`` measures the start).
"""

from __future__ import annotations

# group module (reconciler.cli.<group>) -> its commands and their help
GROUPS: dict[str, dict[str, str]] = {
    "deploy": {
        "validate": "check a desired-state folder on disk",
        "plan": "fetch, validate and print what a sync would do",
        "sync": "one fetch -> validate -> apply pass",
        "run": "the daemon: poll, back up, restore, until stopped",
        "healthcheck": "exit 0 when the daemon's loop is alive",
    },
    "status": {
        "status": "applied commit, last sync, services, errors",
    },
    "backup": {
        "backup": "back up now, list, verify or prune backups",
    },
    "restore": {
        "restore": "restore a backup over the stack by hand (same engine as restore.yaml)",
    },
    "secrets": {
        "secrets": "the VM's age key for encrypted files in git",
    },
}

HELP: dict[str, str] = {name: text for group in GROUPS.values() for name, text in group.items()}


def group_of(command: str) -> str | None:
    return next((group for group, names in GROUPS.items() if command in names), None)
