"""``reconciler status [--json]``: the applied commit, the last pass, services, backups.

Both forms print the one typed report of ``reconciler/status_report.py``,
which the metrics read too.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reconciler.cli.commands import GROUPS
from reconciler.settings import Settings
from reconciler.status_report import BackupReport, DrillReport, RestoreRow, StatusReport


def register(commands: Any) -> None:
    status = commands.add_parser("status", help=GROUPS["status"]["status"])
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.adapters.docker_engine import DockerEngine
    from reconciler.status_report import collect

    report = collect(settings, engine=DockerEngine())
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return 0
    print(format_status(report))
    return 0


def format_status(report: StatusReport) -> str:
    ready = "Ready" if report.ready else "Not ready"
    lines = [
        f"project:   {report.project or '-'}",
        f"repo:      {report.repo or '-'} ({report.branch or '-'})",
        f"applied:   {_short(report.applied_commit)}  at {_time(report.applied_at)}",
        f"attempted: {_short(report.attempted_commit)}",
        f"last sync: {_time(report.last_sync, 'never')} -> {report.last_result or '-'}",
        f"condition: {ready} ({report.reason})",
    ]
    deploying = report.reconciling
    if deploying is not None:
        lines.append(
            f"condition: Reconciling: commit {_short(deploying.commit)} since "
            f"{deploying.since}, {deploying.actions} action(s); now: {deploying.step}"
        )
    if report.last_error:
        lines.append("last error:")
        lines += [f"  {line}" for line in report.last_error.splitlines()]
    if report.services is not None:
        lines.append("services:")
        for svc in report.services:
            health = f" ({svc.health})" if svc.health else ""
            lines.append(
                f"  {svc.name or '-':<16} {svc.state}{health}  commit {_short(svc.commit)}"
            )
        if not report.services:
            lines.append("  none")
    elif report.services_error:
        lines.append(f"services: unknown ({report.services_error})")
    lines += _backup_lines(report.backup)
    lines += _restore_lines(report.restores, report.drill)
    lines += [f"unreadable: {error}" for error in report.errors.values()]
    return "\n".join(lines)


def _backup_lines(backup: BackupReport) -> list[str]:
    lines = []
    last = backup.last
    if last is not None:
        size_text = f", {last.size / 1e6:.1f} MB" if last.size is not None else ""
        took = f" in {last.duration_s:.0f}s" if last.duration_s is not None else ""
        lines.append(
            f"last backup: {last.time} {last.result} {last.id or ''}{size_text}{took}".rstrip()
        )
    else:
        lines.append("last backup: none")
    if backup.schedule:
        lines.append(f"next backup: {backup.next or '-'} ({backup.schedule})")
    if backup.error:
        lines.append(f"backup error: {backup.error}")
    return lines


def _restore_lines(restores: list[RestoreRow], drill: DrillReport | None) -> list[str]:
    lines = []
    if restores:
        lines.append("restores:")
        for record in restores[:10]:
            error = f"  {record.error}" if record.error else ""
            lines.append(f"  {record.id}: {record.state} (backup {record.backup or '-'}){error}")
            if record.hint:
                lines.append(f"    {record.hint}")
    if drill is not None:
        when = drill.finished or drill.started
        lines.append(f"restore drill: {drill.result} at {when} (backup {drill.backup or '-'})")
    return lines


def _short(commit: object) -> str:
    return str(commit)[:12] if commit else "-"


def _time(value: object, missing: str = "-") -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value or missing)
