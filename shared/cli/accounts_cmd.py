"""`obsflow accounts create|token|list`: the site's accounts, run by an operator on the site."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from shared.cli.commands import help_of
from shared.errors import ObsflowError

# Written out so that `--help` imports no database driver; tests/cli holds them to shared/auth's values.
ROLES = ("callback-only", "read-only", "read-append", "admin")
PASSWORD_RULES = "A password has 12 to 1024 characters."
STDIN_EXAMPLE = "printf '%s\\n' \"$PASSWORD\" | obsflow accounts {command} NAME{extra} --password-stdin"


class PasswordUnavailable(ObsflowError):
    """No password could be read: no terminal to ask on, or nothing on standard input."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the accounts commands."""
    accounts = sub.add_parser("accounts", help=help_of("accounts"), description=help_of("accounts"))
    acc_sub = accounts.add_subparsers(dest="accounts_command", required=True, metavar="SUBCOMMAND")
    create = acc_sub.add_parser(
        "create", help="create an account (the first admin is made this way)",
        description=f"Create an account. {PASSWORD_RULES} It is asked twice on the terminal, or read from the first "
        "line of standard input with --password-stdin (for scripts: "
        f"{STDIN_EXAMPLE.format(command='create', extra=' --role admin')}).",
    )
    create.add_argument("name", help="1-64 of letters, digits, '_', '.', '@', '-'")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="callback-only < read-only < read-append < admin")
    create.add_argument("--password-stdin", action="store_true",
                        help=f"read the password from the first line of standard input. {PASSWORD_RULES}")
    create.set_defaults(func=_create)
    token = acc_sub.add_parser(
        "token", help="check a password and print an API token",
        description="Check an account's password and print an API token (export OBSFLOW_TOKEN=$(obsflow accounts "
        "token NAME)). The password is asked on the terminal, or read from the first line of standard input with "
        f"--password-stdin ({STDIN_EXAMPLE.format(command='token', extra='')}).",
    )
    token.add_argument("name")
    token.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")
    token.set_defaults(func=_token)
    listing = acc_sub.add_parser("list", help="list accounts and their roles")
    listing.add_argument("--json", action="store_true", help="print the accounts as one JSON document")
    listing.set_defaults(func=_list)


def read_password(name: str, *, from_stdin: bool, confirm: bool) -> str:
    """The password: the first line of standard input, or asked on the terminal (twice when `confirm`)."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise PasswordUnavailable("nothing on standard input: send the password as its first line")
        return line.rstrip("\r\n")
    if not _terminal():
        raise PasswordUnavailable(
            "no terminal to ask for the password on: send it on standard input with --password-stdin, e.g. "
            f"{STDIN_EXAMPLE.format(command='create' if confirm else 'token', extra='')}. {PASSWORD_RULES}")
    try:
        first = getpass.getpass(f"password for {name}: ")
        if confirm and getpass.getpass("again: ") != first:
            raise PasswordUnavailable("the two passwords differ; nothing was created")
    except EOFError:
        raise PasswordUnavailable("no password was typed; nothing was done") from None
    return first


def _terminal() -> bool:
    """True when getpass can ask without echoing: a controlling terminal (/dev/tty), or standard input is one."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
        return True
    except OSError:
        return sys.stdin.isatty()


async def _create(args: argparse.Namespace) -> int:
    from shared.auth import Role
    from shared.auth.accounts import open_accounts
    from shared.settings import load_settings

    settings = load_settings(args.config)
    password = read_password(args.name, from_stdin=args.password_stdin, confirm=True)
    async with open_accounts(settings) as accounts:
        await accounts.create(args.name, password, Role.parse(args.role))
    print(f"account {args.name} created with role {args.role}")
    return 0


async def _token(args: argparse.Namespace) -> int:
    from shared.auth import issue_token
    from shared.auth.accounts import open_accounts
    from shared.auth.secrets import site_secret
    from shared.settings import load_settings

    settings = load_settings(args.config)
    password = read_password(args.name, from_stdin=args.password_stdin, confirm=False)
    secret = site_secret(settings)  # refuse a guessable secret before asking the database anything
    async with open_accounts(settings) as accounts:
        principal = await accounts.authenticate(args.name, password)
    print(issue_token(secret, principal, settings.token_ttl_s))
    return 0


async def _list(args: argparse.Namespace) -> int:
    from shared.auth.accounts import open_accounts
    from shared.cli.output import Output
    from shared.settings import load_settings

    settings = load_settings(args.config)
    async with open_accounts(settings) as accounts:
        rows = [{"name": r["name"], "role": r["role"], "state": "disabled" if r["disabled_at"] else "active",
                 "created_at": r["created_at"], "disabled_at": r["disabled_at"]} for r in await accounts.list()]
    out = Output()
    if args.json:
        out.json({"accounts": [{k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in r.items()}
                               for r in rows]})
    else:
        out.table([(r["name"], r["role"], r["state"], r["created_at"]) for r in rows],
                  ("name", "role", "state", "created_at"), empty="(no accounts: create the first admin with "
                  "`obsflow accounts create NAME --role admin`)")
    return 0
