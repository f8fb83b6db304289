"""The command list: every command is registered by the module it names, with the help it lists; a command's
module (and what it imports) is loaded only when it is used; values written out for speed match their source."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from shared.auth import Role
from shared.auth.accounts import MAX_PASSWORD, MIN_PASSWORD
from shared.cli.accounts_cmd import PASSWORD_RULES, ROLES
from shared.cli.commands import COMMANDS
from shared.cli.main import build_parser, command_in


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_registered_by_its_module_with_the_help_it_lists() -> None:
    full = _subcommands(build_parser("*"))
    assert list(full) == [c.name for c in COMMANDS]
    for command in COMMANDS:
        parser = full[command.name]
        assert parser.add_help, f"{command.name} was left a stub: {command.module} does not register it"
    choices = next(a for a in build_parser("*")._actions if isinstance(a, argparse._SubParsersAction))._choices_actions
    assert {a.dest: a.help for a in choices} == {c.name: c.help for c in COMMANDS}


def test_the_command_word_of_a_command_line() -> None:
    assert command_in(["--config", "x.toml", "search", "--json"]) == "search"
    assert command_in(["--config=x.toml", "-h"]) is None
    assert command_in(["workflow", "status", "r"]) == "workflow"


@pytest.mark.parametrize("command", [None, *(c.name for c in COMMANDS)])
def test_building_a_commands_parser_imports_no_driver(command: str | None) -> None:
    heavy = ["aiohttp", "aio_pika", "asyncpg", "pydantic", "pydantic_settings", "structlog", "rich", "asyncio",
             "argon2", "services.ingest.ingester", "services.catalog.search", "shared.client", "shared.bus"]
    probe = (f"import sys, json; from shared.cli.main import build_parser; build_parser({command!r}); "
             f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                       timeout=60).stdout)
    assert loaded == [], f"`obsflow {command or ''} --help` imports {loaded}"


def test_written_out_values_match_their_source() -> None:
    assert f"A password has {MIN_PASSWORD} to {MAX_PASSWORD} characters." == PASSWORD_RULES
    assert tuple(sorted((r.label for r in Role), key=Role.parse)) == ROLES
