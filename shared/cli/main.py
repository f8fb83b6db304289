"""`obsflow`: run services, follow events, replay projections; services add their own commands.

Only the command being run is imported (shared/cli/commands.py lists them all with their help), so `obsflow --help`
and a command's `--help` answer at once. Whatever goes wrong ends as one line, `obsflow: <message>`, and exit
status 2 (130 when interrupted): never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from shared.cli.commands import BY_NAME, COMMANDS

TRACEBACK_ENV = "OBSFLOW_TRACEBACK"  # set to 1 to see the traceback of an unexpected error


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command listed; the full arguments of `command`'s module only (or of all of
    them when `command` is "*")."""
    parser = argparse.ArgumentParser(prog="obsflow", description="Observatory data flow.")
    parser.add_argument("--config", help="TOML settings file (also OBSFLOW_CONFIG_FILE)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = {c.module for c in COMMANDS} if command == "*" else {BY_NAME[command].module} if command in BY_NAME \
        else set()
    registered: set[str] = set()
    for entry in COMMANDS:
        if entry.module in wanted:
            if entry.module not in registered:
                registered.add(entry.module)
                importlib.import_module(entry.module).register(sub)
        else:
            sub.add_parser(entry.name, help=entry.help, add_help=False)  # listed; its arguments come with its module
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The command word of a command line (the first word that is not a top-level option or its value)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `obsflow` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(command_in(argv)).parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the command line's edge: one line for the person, never a traceback
        print(f"obsflow: {describe_failure(e)}", file=sys.stderr)
        if os.environ.get(TRACEBACK_ENV):
            raise
        return 2


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import inspect

    from shared.logging import configure_logging

    # Client commands log warnings only, to stderr (stdout is for their output); services reconfigure at start.
    configure_logging("cli", os.environ.get("OBSFLOW_SITE", "local"), "auto", "warning")
    result = args.func(args)
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    return int(result or 0)


def describe_failure(error: BaseException) -> str:
    """What to tell the person about an error: our errors' messages say what to do; a file the command could not
    read or write is named; an outage the driver reported in its own words is an outage; anything else is
    unexpected, and says how to see more."""
    from shared.errors import ObsflowError

    if isinstance(error, ObsflowError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"cannot use{where}: {error.strerror}"
    from shared.failures import describe, is_transient

    if is_transient(error):  # a driver's own word for an outage (a connection closed under it by a broker restart)
        return (f"a server obsflow needs went away or is restarting ({describe(error)}); try again shortly, and check "
                "that PostgreSQL and RabbitMQ are up")
    return (f"unexpected {error.__class__.__name__}: {error}; this is a fault of obsflow: please report it with the "
            f"command you ran ({TRACEBACK_ENV}=1 shows where it happened)")


if __name__ == "__main__":
    sys.exit(main())
