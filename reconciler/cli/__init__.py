"""The ``reconciler`` command line: one module per command group.

``deploy`` (validate, plan, sync, run, healthcheck), ``status``, ``backup``,
``restore`` and ``secrets``; ``commands.py`` is the table of them. Only the
group of the command being run is imported (``--help`` imports them all).

Exit statuses are part of the contract (product.md): validate 0/1; plan 0
nothing to do, 2 changes pending, 1 error; sync 0 converged, 1 failed; status 0.
Settings come from the environment and the env file; the global flags
override them for one run.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from reconciler import __version__
from reconciler.cli.commands import GROUPS, HELP, group_of
from reconciler.errors import ReconcilerError, SettingsError
from reconciler.logs import configure
from reconciler.settings import Settings, load_settings


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    group = parser.add_argument_group("settings (override the environment / env file)")
    group.add_argument("--repo", help="git URL or local path (RECONCILER_REPO)")
    group.add_argument("--branch", help="branch to follow (RECONCILER_BRANCH, default main)")
    group.add_argument("--dir", dest="directory", help="desired-state folder in the repo")
    group.add_argument("--project", help="Compose project name (RECONCILER_PROJECT)")
    group.add_argument("--state-dir", help="durable state (RECONCILER_STATE_DIR)")
    group.add_argument("--log-format", choices=["auto", "json", "text"])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command``, only that command's group is imported.

    The other commands are still listed (from ``commands.HELP``), so usage
    errors name every command either way.
    """
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="GitOps for one Docker VM: converge the engine to desired-state/ in git.",
    )
    _global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = group_of(command) if command else None
    for group, names in GROUPS.items():
        if wanted is None or group == wanted:
            importlib.import_module(f"reconciler.cli.{group}").register(commands)
        else:
            for name in names:
                commands.add_parser(name, help=HELP[name])
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, found without importing any group."""
    probe = argparse.ArgumentParser(add_help=False)
    _global_options(probe)
    probe.add_argument("command", nargs="?")
    try:
        known, _rest = probe.parse_known_args(argv)
    except SystemExit:  # a bad global flag: the full parser says so below
        return None
    return known.command if known.command in HELP else None


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
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        os.umask(old_umask)


def _main(argv: list[str]) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper) and not sys.stdout.line_buffering:
        # One write per line: where stdout and stderr reach one pipe by two
        # ways (docker run's attach, as install.sh runs a sync), a block of
        # stdout flushed at the exit could be split by a log line mid-line.
        sys.stdout.reconfigure(line_buffering=True)
    if not isinstance(sys.stdout, _RedactingStream):
        sys.stdout = _RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, _RedactingStream):
        sys.stderr = _RedactingStream(sys.stderr)
    wants_help = any(arg in ("-h", "--help") for arg in argv)
    parser = build_parser(None if wants_help else _command_in(argv))
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1
    configure(_log_format(args, settings), verbose=args.verbose)
    try:
        return int(args.handler(args, settings))
    except KeyboardInterrupt:
        return 130
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1


def _log_format(args: argparse.Namespace, settings: Settings) -> str:
    """JSON for the daemon and for scripts; text for a person at a terminal.

    install.sh writes RECONCILER_LOG_FORMAT=json for the daemon's log; a
    person running ``docker exec -it ... reconciler backup run`` must still
    read sentences, not JSON between the command's own lines. Only the
    command's own ``--log-format`` flag overrides that.
    """
    if args.command == "run":
        return settings.log_format if settings.log_format != "auto" else "json"
    if args.log_format:
        return str(args.log_format)
    if sys.stderr.isatty():
        return "text"
    return settings.log_format


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        repo=args.repo,
        branch=args.branch,
        directory=args.directory,
        project=args.project,
        state_dir=args.state_dir,
        log_format=args.log_format,
    )
