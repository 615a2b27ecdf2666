"""``reconciler restore``: a restore by hand, and the restore drill on demand.

``reconciler restore BACKUP [--source URL] [--volumes a,b] [--databases db] [--path P] [--yes]``
runs the same engine as restore.yaml requests (verify first, safety copy,
replace, health), for the desired state of the applied commit, under the
pass lock so the daemon does not repair "drift" mid-restore. It is recorded
in the ledger as ``manual-<time>`` (or ``--id``), so status shows it with its
safety copy. Without ``--yes`` it asks on a terminal and refuses otherwise.

``reconciler restore --drill [BACKUP]`` runs the restore drill now: scratch
volumes and a scratch database, checked, then removed.

Exit status: 0 restored (or drill passed); 1 failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reconciler.cli.commands import HELP
from reconciler.settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "restore",
        help=HELP["restore"],
        description=(
            "Restore BACKUP ('latest' or an id from `reconciler backup list`) over the "
            "volumes and databases of the applied commit's stack. The backup is verified "
            "first and the current contents go to a safety copy before anything is replaced."
        ),
    )
    parser.add_argument("backup", nargs="?", metavar="BACKUP", help="latest, or a backup id")
    parser.add_argument(
        "--source", help="where the backup is (s3://BUCKET/PREFIX, file:///PATH); default: own"
    )
    parser.add_argument(
        "--volumes", type=_names, help="comma-separated compose volumes (default: all); '' none"
    )
    parser.add_argument(
        "--databases", type=_names, help="comma-separated database services (default: all)"
    )
    parser.add_argument(
        "--path",
        dest="paths",
        action="append",
        metavar="P",
        help="only this file or folder of the one volume named with --volumes (repeatable)",
    )
    parser.add_argument("--id", dest="request_id", help="ledger id (default: manual-<time>)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--drill", action="store_true", help="run the restore drill now instead")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=cmd_restore)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    if args.drill:
        return _drill(args, settings)
    if not args.backup:
        print(
            "reconciler restore: name a BACKUP: latest, or an id from `backup list`",
            file=sys.stderr,
        )
        return 1
    from reconciler.restore.restore_manual import ManualRestore

    job = ManualRestore.prepare(
        settings,
        backup=args.backup,
        source=args.source,
        volumes=args.volumes,
        databases=args.databases,
        request_id=args.request_id,
        paths=tuple(args.paths) if args.paths else None,
    )
    if not args.yes and not _confirmed(job.describe()):
        print("reconciler restore: not confirmed; nothing was changed (use --yes)", file=sys.stderr)
        return 1
    outcome = job.run()
    record = outcome.record.to_status()
    if args.json:
        print(json.dumps(record, indent=2, default=str))
    elif outcome.ok:
        print(outcome.summary())
    if not outcome.ok:
        print(f"reconciler restore: {outcome.summary()}", file=sys.stderr)
        if record.get("hint"):
            print(record["hint"], file=sys.stderr)
        return 1
    return 0


def _confirmed(description: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{description}\nrefusing without --yes (not a terminal)", file=sys.stderr)
        return False
    print(description)
    answer = input("Type 'yes' to replace them: ")
    return answer.strip().lower() == "yes"


def _drill(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.restore.restore_drill import run_drill_now

    result = run_drill_now(settings, backup=args.backup or "latest", source=args.source)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"restore drill of backup {result.get('backup') or '?'}: {result['result']}")
        if result.get("error"):
            print(result["error"], file=sys.stderr)
    return 0 if result["result"] == "ok" else 1
