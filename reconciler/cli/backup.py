"""``reconciler backup run | list | verify | prune | key``: the backup commands.

Registered by ``reconciler.cli`` (``register(commands)``); each handler takes
``(args, settings)`` like the core commands and returns the exit status:
0 ok, 1 failed. The context (the applied commit's stack and backup.yaml) is
loaded only by the commands that need it: ``list``, ``verify`` and ``key``
with ``--target`` work from the target alone, e.g. on a developer's PC.

``backup key list | add | remove`` rotates ``RECONCILER_BACKUP_KEY``, the
restic password of the target's repository. A new key is read from
``RECONCILER_NEW_BACKUP_KEY`` or stdin, never from the command line, which
any user of the host can read in ``ps``.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from reconciler.adapters.restic import Repository, Runner
from reconciler.backup.backup_jobs import BackupContext, backup_now, load_context
from reconciler.backup.backup_key import (
    VARIABLE,
    check_new_key,
    env_file_of,
    key_to_remove,
    open_repository,
)
from reconciler.backup.backup_target import BackupTarget, open_target
from reconciler.backup.manifests import Progress
from reconciler.backup.stored_backups import list_backups, prune, verify_backup
from reconciler.cli.commands import HELP
from reconciler.decide.retention import RetentionRules
from reconciler.errors import BackupKeyRefused, ReconcilerError
from reconciler.redaction import register_secret
from reconciler.settings import Settings

ContextLoader = Callable[[Settings], BackupContext]
NEW_KEY_VARIABLE = "RECONCILER_NEW_BACKUP_KEY"
# A key is one line; more on stdin is a mistake (a file of something else).
MAX_KEY_INPUT = 4096


def register(commands: Any, load: ContextLoader = load_context) -> None:
    """Add ``backup`` and its subcommands to the CLI's subparsers."""
    parser = commands.add_parser("backup", help=HELP["backup"])
    sub = parser.add_subparsers(dest="backup_command", required=True, metavar="ACTION")

    run = sub.add_parser("run", help="back up the volumes and databases of backup.yaml now")
    run.add_argument("--target", help="s3://BUCKET/PREFIX or file:///PATH instead of backup.yaml's")
    run.set_defaults(handler=lambda args, settings: cmd_run(args, settings, load))

    listing = sub.add_parser("list", help="the backups in the target, newest first")
    listing.add_argument("--json", action="store_true", help="a JSON list of objects")
    listing.add_argument("--target", help="another target than backup.yaml's")
    listing.set_defaults(handler=lambda args, settings: cmd_list(args, settings, load))

    verify = sub.add_parser("verify", help="download a backup and check it end to end")
    verify.add_argument("backup_id", metavar="ID")
    verify.add_argument("--target", help="another target than backup.yaml's")
    verify.set_defaults(handler=lambda args, settings: cmd_verify(args, settings, load))

    pruning = sub.add_parser("prune", help="delete backups the retention policy lets go")
    pruning.add_argument("--dry-run", action="store_true", help="only say what would go")
    pruning.add_argument("--target", help="another target than backup.yaml's")
    pruning.set_defaults(handler=lambda args, settings: cmd_prune(args, settings, load))

    key = sub.add_parser("key", help="list, add or remove keys of the backup repository")
    keys = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    key_list = keys.add_parser("list", help="the keys that open the repository")
    key_list.add_argument("--json", action="store_true", help="a JSON list of objects")
    key_add = keys.add_parser(
        "add",
        help=f"add a key, read from {NEW_KEY_VARIABLE} or stdin (never an argument)",
    )
    key_remove = keys.add_parser("remove", help="remove a key by id (never the one in use)")
    key_remove.add_argument("key_id", metavar="ID", help="its id, or the start of it")
    for action in (key_list, key_add, key_remove):
        action.add_argument("--target", help="another target than backup.yaml's")
        action.set_defaults(handler=lambda args, settings: cmd_key(args, settings, load))


def _target(args: argparse.Namespace, settings: Settings, load: ContextLoader) -> str:
    if getattr(args, "target", None):
        return str(args.target)
    return load(settings).target()


def cmd_run(args: argparse.Namespace, settings: Settings, load: ContextLoader) -> int:
    context = load(settings)
    bar = ProgressLine(sys.stderr) if sys.stderr.isatty() else None
    try:
        result = backup_now(context, target=args.target, progress=bar)
    except ReconcilerError as exc:
        if bar:
            bar.clear()
        print(f"reconciler backup run: {exc}", file=sys.stderr)
        return 1
    if bar:
        bar.clear()
    manifest = result.manifest
    print(
        f"backup {manifest.id}: {len(manifest.artifacts)} artifacts, {human(manifest.size)} "
        f"in {manifest.duration_s:.1f}s to {context.target(args.target)}"
    )
    if result.pruned:
        print(f"pruned: {', '.join(result.pruned)}")
    return 0


def _open(args: argparse.Namespace, settings: Settings, load: ContextLoader) -> BackupTarget:
    return open_target(
        _target(args, settings, load), settings.environ, state_dir=settings.state_dir
    )


def cmd_list(args: argparse.Namespace, settings: Settings, load: ContextLoader) -> int:
    target = open_target(
        _target(args, settings, load), settings.environ, state_dir=settings.state_dir
    )
    backups = list_backups(target)
    if args.json:
        print(json.dumps([b.to_dict() for b in backups], indent=2))
        return 0
    if not backups:
        print(f"no backups in {target.store.url}")
        return 0
    print(f"{'ID':<22} {'TIME':<25} {'SIZE':>10}  STATE")
    for backup in backups:
        print(
            f"{backup.id:<22} {backup.time.isoformat():<25} {human(backup.size):>10}  "
            f"{backup.state}"
        )
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings, load: ContextLoader) -> int:
    target = open_target(
        _target(args, settings, load), settings.environ, state_dir=settings.state_dir
    )
    bar = ProgressLine(sys.stderr) if sys.stderr.isatty() else None
    try:
        manifest = verify_backup(target, args.backup_id, progress=bar)
    except ReconcilerError as exc:
        if bar:
            bar.clear()
        print(f"reconciler backup verify: {exc}", file=sys.stderr)
        return 1
    if bar:
        bar.clear()
    print(
        f"backup {manifest.id}: {len(manifest.artifacts)} artifacts verified "
        f"({human(manifest.size)}, every part authenticated and read to its end)"
    )
    return 0


def cmd_prune(args: argparse.Namespace, settings: Settings, load: ContextLoader) -> int:
    context = load(settings)
    retention = context.policy.retention if context.policy else None
    rules = (
        RetentionRules(retention.daily, retention.weekly, retention.monthly)
        if retention
        else RetentionRules()
    )
    target = context.backup_target(args.target)
    decision = prune(target, rules, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for ident in decision.keep:
        print(f"keep    {ident}  ({', '.join(decision.reasons[ident])})")
    for ident in decision.delete:
        print(f"{'delete' if args.dry_run else 'deleted'} {ident}")
    print(f"{verb} {len(decision.delete)}, kept {len(decision.keep)} in {target.store.url}")
    return 0


def cmd_key(
    args: argparse.Namespace,
    settings: Settings,
    load: ContextLoader,
    *,
    stdin: TextIO | None = None,
    runner: Runner | None = None,
) -> int:
    action = args.key_command
    try:
        target = _target(args, settings, load)
        repo = open_repository(target, settings.environ, env_file=settings.env_file, runner=runner)
        if action == "list":
            return _key_list(repo, as_json=args.json)
        if action == "add":
            given = _read_new_key(settings.environ, sys.stdin if stdin is None else stdin)
            new_key = check_new_key(given, current=settings.environ.get(VARIABLE, ""))
            register_secret(new_key)
            return _key_add(repo, settings, new_key)
        return _key_remove(repo, args.key_id)
    except ReconcilerError as exc:
        print(f"reconciler backup key {action}: {exc}", file=sys.stderr)
        return 1


def _key_list(repo: Repository, *, as_json: bool) -> int:
    keys = repo.list_keys()
    if as_json:
        print(json.dumps([dataclasses.asdict(k) for k in keys], indent=2))
        return 0
    print(f"  {'ID':<10} {'USER':<12} {'HOST':<20} CREATED")
    for k in keys:
        print(f"{'*' if k.current else ' '} {k.id:<10} {k.user:<12} {k.host:<20} {k.created}")
    print(f"(* the key in use, {VARIABLE}; {len(keys)} in {repo.where})")
    return 0


def _key_add(repo: Repository, settings: Settings, new_key: str) -> int:
    before = repo.list_keys()
    repo.add_key(new_key)
    # restic prints no id on "key add": the new one is the id that was not there.
    known = {k.id for k in before}
    added = [k.id for k in repo.list_keys() if k.id not in known]
    old = [k.id for k in before if k.current]
    print(f"added key {', '.join(added) or '(id not found)'} to {repo.where}")
    print(
        f"next: put the new key in {VARIABLE} in "
        f"{env_file_of(settings.environ, settings.env_file)}, restart the reconciler "
        f"(docker restart {settings.project or 'site'}-reconciler-1), then remove the old "
        f"key: reconciler backup key remove {old[0] if old else 'ID'}"
    )
    return 0


def _key_remove(repo: Repository, key_id: str) -> int:
    key = key_to_remove(repo.list_keys(), key_id)
    repo.remove_key(key.id)
    left = [k.id for k in repo.list_keys()]
    print(f"removed key {key.id} from {repo.where}; left: {', '.join(left)}")
    return 0


def _read_new_key(environ: Mapping[str, str], stdin: TextIO) -> str:
    given = environ.get(NEW_KEY_VARIABLE)
    if given:
        return given
    if stdin.isatty():
        # Twice, unseen: a mistyped key would be added, and found out only
        # when it is in the env file and no longer opens anything.
        first = getpass.getpass("new backup key: ", stream=sys.stderr)
        if getpass.getpass("the same again: ", stream=sys.stderr) != first:
            raise BackupKeyRefused("the two entries differ: nothing was added")
        return first
    text = stdin.read(MAX_KEY_INPUT + 1)
    if len(text) > MAX_KEY_INPUT:
        raise BackupKeyRefused(f"stdin holds more than {MAX_KEY_INPUT} characters: not a key")
    if not text.strip():
        raise BackupKeyRefused(
            f"no new key: set {NEW_KEY_VARIABLE} (docker exec -e {NEW_KEY_VARIABLE} ...) "
            "or give it on stdin"
        )
    return text


class ProgressLine:
    """One line on a terminal, redrawn at most five times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = 0.0
        self.width = 0

    def __call__(self, update: Progress) -> None:
        now = time.monotonic()
        if not update.done and now - self.last < 0.2:
            return
        self.last = now
        verb = "read" if update.phase == "backup" else "checked"
        text = f"{update.artifact}: {human(update.bytes_in)} {verb}"
        if update.phase == "backup":
            text += f", {human(update.bytes_out)} stored"
        if update.done:
            text += " - done"
        self.width = max(self.width, len(text))
        self.stream.write("\r" + text.ljust(self.width))
        if update.done:
            self.stream.write("\n")
            self.width = 0
        self.stream.flush()

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
