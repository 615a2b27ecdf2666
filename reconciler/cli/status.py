"""``reconciler status [--json]``: the applied commit, the last pass, services, backups."""

from __future__ import annotations

import argparse
import json
from typing import Any

from reconciler.cli.commands import GROUPS
from reconciler.settings import Settings


def register(commands: Any) -> None:
    status = commands.add_parser("status", help=GROUPS["status"]["status"])
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.wiring import collect_status

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
    deploying = report.get("reconciling")
    if isinstance(deploying, dict):
        lines.append(
            f"condition: Reconciling: commit {_short(deploying.get('commit'))} since "
            f"{deploying.get('since')}, {deploying.get('actions')} action(s); "
            f"now: {deploying.get('step')}"
        )
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
