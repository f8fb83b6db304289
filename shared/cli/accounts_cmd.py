"""`obsflow accounts create|token|list`: the site's accounts, run by an operator on the site."""

from __future__ import annotations

import argparse
import getpass
import sys

from shared.auth import Role, issue_token
from shared.auth.accounts import AccountError, open_accounts
from shared.auth.secrets import site_secret
from shared.settings import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the accounts commands."""
    accounts = sub.add_parser("accounts", help="create accounts and get API tokens")
    acc_sub = accounts.add_subparsers(dest="accounts_command", required=True, metavar="SUBCOMMAND")
    create = acc_sub.add_parser("create", help="create an account (the first admin is made this way)")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=[r.label for r in Role])
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.set_defaults(func=_create)
    token = acc_sub.add_parser("token", help="check a password and print an API token")
    token.add_argument("name")
    token.add_argument("--password-stdin", action="store_true")
    token.set_defaults(func=_token)
    listing = acc_sub.add_parser("list", help="list accounts and their roles")
    listing.set_defaults(func=_list)


def _password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if confirm and getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ; nothing was created")
    return first


async def _create(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    password = _password(args, confirm=True)
    async with open_accounts(settings) as accounts:
        await accounts.create(args.name, password, Role.parse(args.role))
    print(f"account {args.name} created with role {args.role}")
    return 0


async def _token(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    password = _password(args, confirm=False)
    secret = site_secret(settings)  # refuse a guessable secret before asking the database anything
    async with open_accounts(settings) as accounts:
        principal = await accounts.authenticate(args.name, password)
    print(issue_token(secret, principal, settings.token_ttl_s))
    return 0


async def _list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    async with open_accounts(settings) as accounts:
        rows = await accounts.list()
    for r in rows:
        state = "disabled" if r["disabled_at"] else "active"
        print(f"{r['name']:<24} {r['role']:<14} {state:<9} created {r['created_at']:%Y-%m-%d}")
    return 0
