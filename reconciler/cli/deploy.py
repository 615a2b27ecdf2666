"""``reconciler validate | plan | sync | run | healthcheck``: the deploy commands.

Each handler builds the pass from settings (``wiring.py``) only when
it runs, so ``validate`` never opens the remote, and the Docker engine only to
ask whether it is a Swarm manager (RECONCILER_ENGINE=auto, without --engine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reconciler.cli.commands import GROUPS
from reconciler.errors import InvalidDesiredState
from reconciler.settings import Settings


def register(commands: Any) -> None:
    helps = GROUPS["deploy"]
    validate = commands.add_parser("validate", help=helps["validate"])
    validate.add_argument("folder", nargs="?", default="desired-state", metavar="DIR")
    validate.add_argument(
        "--engine",
        choices=["engine", "swarm"],
        default=None,
        help="validate for one Docker engine or for a Swarm manager (default: "
        "RECONCILER_ENGINE; auto asks the engine if it is reachable, else engine)",
    )
    validate.set_defaults(handler=cmd_validate)
    commands.add_parser("plan", help=helps["plan"]).set_defaults(handler=cmd_plan)
    sync = commands.add_parser("sync", help=helps["sync"])
    sync.add_argument(
        "--here",
        action="store_true",
        help="run the pass in this process, never ask a running daemon for it",
    )
    sync.set_defaults(handler=cmd_sync)
    commands.add_parser("run", help=helps["run"]).set_defaults(handler=cmd_run)
    commands.add_parser("healthcheck", help=helps["healthcheck"]).set_defaults(
        handler=cmd_healthcheck
    )


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.wiring import validate_folder

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"{args.folder}: not a folder", file=sys.stderr)
        return 1
    try:
        desired = validate_folder(folder, settings, engine_mode=args.engine)
    except InvalidDesiredState as exc:
        for issue in exc.issues:
            print(issue)
        return 1
    services = ", ".join(desired.services) or "none"
    swarm = any(spec.deploy is not None for spec in desired.services.values())
    mode = "; swarm mode" if swarm else ""
    print(f"{args.folder}: valid (project {desired.project}; services: {services}{mode})")
    return 0


def cmd_plan(_args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.wiring import make_reconciler

    outcome = make_reconciler(settings).plan_only()
    if outcome.plan is None:
        print(outcome.message, file=sys.stderr)
        return 1
    commit = (outcome.commit or "")[:12]
    from reconciler.cli.plan_text import print_plan  # the actions' model: plan only

    print_plan(outcome.plan, commit=commit)
    if outcome.plan.conflicts:
        return 1
    return 0 if outcome.plan.empty else 2


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    # A running daemon of these settings runs the pass (daemon/control.py):
    # no second interpreter importing the deploy side, no pass beside its own.
    # Not with --here: install.sh's first pass and a self-update's helper run
    # a new image's code, which the daemon they replace does not have.
    from reconciler.daemon.control import ask_for_sync
    from reconciler.errors import DaemonGone

    outcome: Any = None
    try:
        if not args.here:
            outcome = ask_for_sync(settings)
    except DaemonGone as exc:
        print(f"reconciler sync: {exc}; see the daemon's log", file=sys.stderr)
        return 1
    if outcome is None:
        from reconciler.wiring import make_reconciler

        outcome = make_reconciler(settings).sync()
    commit = (outcome.commit or "?")[:12]
    for change in outcome.changes:
        print(f"  {change}")
    if outcome.ok:
        print(f"commit {commit}: converged ({len(outcome.changes)} change(s))")
        return 0
    print(f"commit {commit}: {outcome.result} ({outcome.reason})", file=sys.stderr)
    if outcome.message:
        print(outcome.message, file=sys.stderr)
    return 1


def cmd_run(_args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.wiring import make_daemon

    return make_daemon(settings).run()


def cmd_healthcheck(_args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.daemon.loop import loop_health

    health = loop_health(settings.state_dir, interval_s=settings.interval_s)
    print(health.message, file=sys.stdout if health.alive else sys.stderr)
    return 0 if health.alive else 1
