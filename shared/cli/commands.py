"""The commands of `obsflow`, named here with their one-line help, so that `obsflow --help` imports nothing else:
a command's module (and what it imports: the client, the bus, a service's code) is loaded when it is used."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A top-level command, the module whose `register(subparsers)` adds it (with the others of that module)."""

    name: str
    module: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("up", "shared.cli.runtime_cmd", "run every service, each in its own supervised process, logs merged"),
    Command("service", "shared.cli.runtime_cmd", "run one service in this process"),
    Command("replay", "shared.cli.runtime_cmd", "rebuild a service's projection from the start of the log"),
    Command("setup", "shared.cli.setup_cmd",
            "create or update each service's database role and broker user, and the site's bus"),
    Command("accounts", "shared.cli.accounts_cmd", "create accounts and get API tokens"),
    Command("events", "shared.cli.events_cmd", "follow the event log, live or from a point in time"),
    Command("upload", "services.ingest.cli", "upload a file or directory to this site (verified, then minted)"),
    Command("simulate", "services.ingest.cli", "simulate an instrument"),
    Command("search", "services.catalog.cli", "search files, observations or sessions (docs/catalog-search.md)"),
    Command("locate", "services.catalog.cli", "every copy of a file, at this site and the others"),
    Command("provenance", "services.catalog.cli", "what produced a file, and what was produced from it"),
    Command("sessions", "services.catalog.cli", "observing sessions: list, show, close"),
    Command("conflicts", "services.catalog.cli", "names minted by two sites with different contents"),
    Command("workflow", "services.scheduler.cli", "plan, register and run hera_opm workflows; follow their runs"),
    Command("orders", "services.transfer.cli", "standing orders: matching files this site holds go to another site"),
    Command("transfers", "services.transfer.cli", "the transfers standing orders want, by state; the stuck ones"),
)
BY_NAME = {command.name: command for command in COMMANDS}


def help_of(name: str) -> str:
    """The one-line help of the command `name` (its module passes it to add_parser)."""
    return BY_NAME[name].help
