"""`obsflow`: run services, follow events, replay projections; services add their own commands."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Sequence

from shared.cli import accounts_cmd, events_cmd, runtime_cmd, setup_cmd
from shared.errors import ObsflowError
from shared.logging import configure_logging

# Service packages that contribute commands through `services/<name>/cli.py: register(subparsers)`.
COMMAND_MODULES = ("services.ingest.cli", "services.catalog.cli", "services.scheduler.cli", "services.transfer.cli")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every service's commands."""
    parser = argparse.ArgumentParser(prog="obsflow", description="Observatory data flow.")
    parser.add_argument("--config", help="TOML settings file (also OBSFLOW_CONFIG_FILE)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runtime_cmd.register(sub)
    events_cmd.register(sub)
    accounts_cmd.register(sub)
    setup_cmd.register(sub)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `obsflow` console script."""
    args = build_parser().parse_args(argv)
    # Client commands log warnings only, to stderr (stdout is for their output); services reconfigure at start.
    configure_logging("cli", os.environ.get("OBSFLOW_SITE", "local"), "auto", "warning")
    try:
        result = args.func(args)
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
        return int(result or 0)
    except ObsflowError as e:
        print(f"obsflow: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
