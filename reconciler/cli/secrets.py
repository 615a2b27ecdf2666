"""``reconciler secrets recipient`` and ``reconciler secrets keygen``: the VM's age key.

The recipient (public key) is what a developer encrypts for
(``sops --encrypt --age RECIPIENT`` or ``age -r RECIPIENT``); the identity
(private key) stays in ``RECONCILER_AGE_KEY_FILE`` on the VM. Neither command
ever prints the private key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reconciler.cli.commands import HELP
from reconciler.settings import Settings


def register(commands: Any) -> None:
    secrets = commands.add_parser("secrets", help=HELP["secrets"])
    sub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="SUBCOMMAND")
    recipient = sub.add_parser("recipient", help="print the public key to encrypt for")
    recipient.add_argument("--key-file", type=Path, help="default: RECONCILER_AGE_KEY_FILE")
    recipient.set_defaults(handler=cmd_recipient)
    keygen = sub.add_parser("keygen", help="create the VM's age key (mode 0600) if absent")
    keygen.add_argument("--key-file", type=Path, help="default: RECONCILER_AGE_KEY_FILE")
    keygen.set_defaults(handler=cmd_keygen)


def cmd_recipient(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.secret_keys import recipient_of

    for recipient in recipient_of(args.key_file or settings.age_key_file):
        print(recipient)
    return 0


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.secret_keys import keygen

    path = args.key_file or settings.age_key_file
    recipient = keygen(path)
    print(f"wrote {path}; its recipient (encrypt for this):")
    print(recipient)
    return 0
