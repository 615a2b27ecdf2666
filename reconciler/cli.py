"""The ``reconciler`` command line: validate, plan, sync, run, status, healthcheck.

Exit statuses are part of the contract (product.md): validate 0/1; plan 0
nothing to do, 2 changes pending, 1 error; sync 0 converged, 1 failed; status 0.
Settings come from the environment and the env file; the global flags
override them for one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from reconciler import __version__
from reconciler.decide.actions import (
    Action,
    CreateNetwork,
    CreateService,
    CreateVolume,
    Plan,
    RecreateService,
    RemoveContainer,
    RemoveNetwork,
    StartService,
    describe,
)
from reconciler.errors import InvalidDesiredState, ReconcilerError
from reconciler.logs import configure
from reconciler.settings import Settings, SettingsError, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="GitOps for one Docker VM: converge the engine to desired-state/ in git.",
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    group = parser.add_argument_group("settings (override the environment / env file)")
    group.add_argument("--repo", help="git URL or local path (RECONCILER_REPO)")
    group.add_argument("--branch", help="branch to follow (RECONCILER_BRANCH, default main)")
    group.add_argument("--dir", dest="directory", help="desired-state folder in the repo")
    group.add_argument("--project", help="Compose project name (RECONCILER_PROJECT)")
    group.add_argument("--state-dir", help="durable state (RECONCILER_STATE_DIR)")
    group.add_argument("--log-format", choices=["auto", "json", "text"])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a desired-state folder on disk")
    validate.add_argument("folder", nargs="?", default="desired-state", metavar="DIR")
    commands.add_parser("plan", help="fetch, validate and print what a sync would do")
    commands.add_parser("sync", help="one fetch -> validate -> apply pass")
    commands.add_parser("run", help="the daemon: poll, back up, restore, until stopped")
    status = commands.add_parser("status", help="applied commit, last sync, services, errors")
    status.add_argument("--json", action="store_true", help="one JSON object")
    commands.add_parser("healthcheck", help="exit 0 when the daemon's loop is alive")
    _register_feature_commands(commands)
    return parser


def _register_feature_commands(commands: Any) -> None:
    """Backup and restore commands live with their features."""
    import importlib

    for name in ("reconciler.cli_backup", "reconciler.cli_restore", "reconciler.cli_secrets"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise  # a real import error inside the feature must show
            continue
        module.register(commands)


class _RedactingStream:
    """stdout/stderr that mask every secret decrypted in this process (defence in depth)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from reconciler.redaction import redact_secrets

        return self._stream.write(redact_secrets(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    # A second guard behind statefiles.private_dir/private_file: whatever a
    # library or a subprocess (git, ssh, restic, tar) writes on the host is then
    # private too, even where no code of ours chose the mode. Restored on the
    # way out for callers that run main() in their own process (the tests).
    old_umask = os.umask(0o077)
    try:
        return _main(argv)
    finally:
        os.umask(old_umask)


def _main(argv: Sequence[str] | None) -> int:
    if not isinstance(sys.stdout, _RedactingStream):
        sys.stdout = _RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, _RedactingStream):
        sys.stderr = _RedactingStream(sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1
    interactive = args.command != "run"
    configure(
        settings.log_format if settings.log_format != "auto" or interactive else "json",
        verbose=args.verbose,
    )
    try:
        handler = _HANDLERS.get(args.command)
        if handler is None:
            return int(args.handler(args, settings))
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        repo=args.repo,
        branch=args.branch,
        directory=args.directory,
        project=args.project,
        state_dir=args.state_dir,
        log_format=args.log_format,
    )


# -- commands ---------------------------------------------------------------


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.runtime.wiring import validate_folder

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"{args.folder}: not a folder", file=sys.stderr)
        return 1
    try:
        desired = validate_folder(folder, settings)
    except InvalidDesiredState as exc:
        for issue in exc.issues:
            print(issue)
        return 1
    services = ", ".join(desired.services) or "none"
    print(f"{args.folder}: valid (project {desired.project}; services: {services})")
    return 0


def cmd_plan(_args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.runtime.wiring import make_reconciler

    outcome = make_reconciler(settings).plan_only()
    if outcome.plan is None:
        print(outcome.message, file=sys.stderr)
        return 1
    commit = (outcome.commit or "")[:12]
    print_plan(outcome.plan, commit=commit)
    if outcome.plan.conflicts:
        return 1
    return 0 if outcome.plan.empty else 2


_SYMBOLS: dict[type, str] = {
    CreateNetwork: "+",
    CreateVolume: "+",
    CreateService: "+",
    RecreateService: "~",
    StartService: ">",
    RemoveContainer: "-",
    RemoveNetwork: "-",
}


def print_plan(plan: Plan, *, commit: str) -> None:
    if plan.empty:
        print(f"commit {commit}: nothing to do")
        return
    print(f"commit {commit}: {len(plan.actions)} change(s)")
    action: Action
    for action in plan.actions:
        print(f"  {_SYMBOLS[type(action)]} {describe(action)}")
    for conflict in plan.conflicts:
        print(f"  ! conflict: {conflict}")


def cmd_sync(_args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.runtime.wiring import make_reconciler

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
    from reconciler.runtime.wiring import make_daemon

    return make_daemon(settings).run()


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.runtime.wiring import collect_status

    report = collect_status(settings)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(format_status(report))
    return 0


def format_status(report: dict[str, Any]) -> str:
    ready = "Ready" if report.get("ready") else "Not ready"
    lines = [
        f"project:   {report.get('project') or '-'}",
        f"repo:      {report.get('repo') or '-'} ({report.get('branch') or '-'})",
        f"applied:   {_short(report.get('applied_commit'))}  at {report.get('applied_at') or '-'}",
        f"attempted: {_short(report.get('attempted_commit'))}",
        f"last sync: {report.get('last_sync') or 'never'} -> {report.get('last_result') or '-'}",
        f"condition: {ready} ({report.get('reason')})",
    ]
    if report.get("last_error"):
        lines.append("last error:")
        lines += [f"  {line}" for line in str(report["last_error"]).splitlines()]
    services = report.get("services")
    if isinstance(services, list):
        lines.append("services:")
        for svc in services:
            health = f" ({svc['health']})" if svc.get("health") else ""
            lines.append(
                f"  {svc['name']:<16} {svc['state']}{health}  commit {_short(svc.get('commit'))}"
            )
        if not services:
            lines.append("  none")
    elif report.get("services_error"):
        lines.append(f"services: unknown ({report['services_error']})")
    lines += _backup_lines(report.get("backup"))
    lines += _restore_lines(report.get("restores"), report.get("drill"))
    return "\n".join(lines)


def _backup_lines(backup: Any) -> list[str]:
    if not isinstance(backup, dict):
        return []
    lines = []
    last = backup.get("last")
    if isinstance(last, dict):
        size = last.get("size")
        size_text = f", {size / 1e6:.1f} MB" if isinstance(size, int | float) else ""
        duration = last.get("duration_s")
        took = f" in {duration:.0f}s" if isinstance(duration, int | float) else ""
        lines.append(
            f"last backup: {last.get('time')} {last.get('result')} "
            f"{last.get('id') or ''}{size_text}{took}".rstrip()
        )
    else:
        lines.append("last backup: none")
    if backup.get("schedule"):
        lines.append(f"next backup: {backup.get('next') or '-'} ({backup['schedule']})")
    if backup.get("error"):
        lines.append(f"backup error: {backup['error']}")
    return lines


def _restore_lines(restores: Any, drill: Any) -> list[str]:
    lines = []
    if isinstance(restores, list) and restores:
        lines.append("restores:")
        for record in restores[:10]:
            error = f"  {record.get('error')}" if record.get("error") else ""
            lines.append(
                f"  {record.get('id')}: {record.get('state')} "
                f"(backup {record.get('backup') or '-'}){error}"
            )
            if record.get("hint"):
                lines.append(f"    {record['hint']}")
    if isinstance(drill, dict):
        when = drill.get("finished") or drill.get("started")
        lines.append(
            f"restore drill: {drill.get('result')} at {when} (backup {drill.get('backup') or '-'})"
        )
    return lines


def _short(commit: object) -> str:
    return str(commit)[:12] if commit else "-"


def cmd_healthcheck(_args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.runtime.daemon import loop_health

    health = loop_health(settings.state_dir, interval_s=settings.interval_s)
    print(health.message, file=sys.stdout if health.alive else sys.stderr)
    return 0 if health.alive else 1


_HANDLERS = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "sync": cmd_sync,
    "run": cmd_run,
    "status": cmd_status,
    "healthcheck": cmd_healthcheck,
}
