"""`obsflow orders create|list|show|pause|resume|delete` and `obsflow transfers [stuck]`: standing orders and
their transfers from the command line, through the Python client (the transfer service's API)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from shared.cli.commands import help_of
from shared.errors import ObsflowError

if TYPE_CHECKING:
    from shared.api.transfer import Order, TransferList
    from shared.cli.output import Output

MANAGERS = ("http", "local", "globus")  # shared/api/transfer.py's Manager, written out: --help imports no pydantic
STATES = ("queued", "in_flight", "done", "failed")
ORDER_COLUMNS = ("order", "state", "destination", "priority", "label", "search", "created_at")
TRANSFER_COLUMNS = ("file", "destination", "state", "attempts", "next_attempt_at", "last_error")


class OrderUsageError(ObsflowError):
    """An orders command that cannot be sent as given; the message says what to write."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `orders` and `transfers` commands."""
    orders = sub.add_parser("orders", help=help_of("orders"), description=help_of("orders"))
    commands = orders.add_subparsers(dest="orders_command", required=True, metavar="SUBCOMMAND")
    create = commands.add_parser("create", help="create a standing order: matching files this site holds go to SITE")
    create.add_argument("--search", required=True, metavar="JSON",
                        help='a files search (docs/catalog-search.md), e.g. \'{"file_type": {"is": "uvh5"}}\'')
    create.add_argument("--to", required=True, metavar="SITE", dest="destination", help="a declared peer site")
    create.add_argument("--store", help="the destination's store (default: its choice)")
    create.add_argument("--manager", choices=MANAGERS, help="how bytes travel (default: the peer's manager)")
    create.add_argument("--priority", type=int, default=0, help="-1000 to 1000, higher first (default 0)")
    create.add_argument("--label", default="", help="a note of at most 200 characters")
    _common(create, "the order")
    create.set_defaults(func=_create)
    listing = commands.add_parser("list", help="the live standing orders, oldest first")
    _common(listing, "the orders")
    listing.set_defaults(func=_list)
    for name, what in (("show", "show a standing order"), ("pause", "pause a standing order (starts nothing)"),
                       ("resume", "resume a paused standing order"), ("delete", "delete a standing order")):
        one = commands.add_parser(name, help=what)
        one.add_argument("order_id", metavar="ID")
        _common(one, "the order")
        one.set_defaults(func=_one, action=name)
    transfers = sub.add_parser("transfers", help=help_of("transfers"), description=help_of("transfers"))
    _listing_options(transfers)
    transfers.add_argument("--state", choices=STATES, help="only transfers in this state")
    transfers.set_defaults(func=_transfers, stuck=False)
    stuck_sub = transfers.add_subparsers(dest="transfers_command", required=False, metavar="SUBCOMMAND")
    stuck = stuck_sub.add_parser("stuck", help="transfers failed at least once that have not arrived")
    _listing_options(stuck)
    stuck.set_defaults(func=_transfers, stuck=True, state=None)


def _common(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON document")
    parser.add_argument("--token", help="API token (default: $OBSFLOW_TOKEN or ~/.config/obsflow/token)")


def _listing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", metavar="SITE", dest="destination", help="only transfers to this site")
    parser.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
    parser.add_argument("--after", metavar="CURSOR", help="the page after this cursor (printed with a full page)")
    _common(parser, "the page")


def parse_search(text: str) -> dict[str, Any]:
    """The --search value as a JSON object; OrderUsageError saying what to write otherwise."""
    try:
        search = json.loads(text)
    except json.JSONDecodeError as e:
        raise OrderUsageError(f"--search is not JSON ({e}); e.g. '{{\"file_type\": {{\"is\": \"uvh5\"}}}}'") from e
    if not isinstance(search, dict):
        raise OrderUsageError("--search must be a JSON object (a clause), e.g. '{\"file_type\": {\"is\": \"uvh5\"}}'")
    return search


def _output() -> Output:
    from shared.cli.output import Output

    return Output()


def _state(order: Order) -> str:
    return "paused" if order.paused else "active"


def _order_row(order: Order) -> tuple[Any, ...]:
    return (order.order_id, _state(order), order.destination, order.priority, order.label,
            json.dumps(order.search, separators=(",", ":")), order.created_at)


def print_order(out: Output, order: Order) -> None:
    """One order as aligned key-value lines."""
    out.record({"order": order.order_id, "state": _state(order), "destination": order.destination,
                "store": order.store or "(the destination's choice)",
                "manager": order.manager or "(the peer's manager)", "priority": order.priority,
                "label": order.label, "search": json.dumps(order.search), "created": order.created_at,
                "created by": order.created_by, **({"paused": order.paused_at} if order.paused_at else {}),
                **({"deleted": order.deleted_at} if order.deleted_at else {})})


async def _create(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for

    search = parse_search(args.search)
    async with client_for(args) as client:
        order = await client.create_order(search, args.destination, store=args.store, manager=args.manager,
                                          priority=args.priority, label=args.label)
    out = _output()
    if args.json:
        out.json(order)
    else:
        out.line(f"created order {order.order_id}: matching files go to {order.destination}")
    return 0


async def _list(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for

    async with client_for(args) as client:
        orders = await client.orders()
    out = _output()
    if args.json:
        out.json({"orders": orders})
    else:
        out.table([_order_row(o) for o in orders], ORDER_COLUMNS, numeric=("priority",),
                  empty="(no standing orders)")
    return 0


async def _one(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for

    async with client_for(args) as client:
        calls = {"show": client.order, "pause": client.pause_order, "resume": client.resume_order,
                 "delete": client.delete_order}
        order = await calls[args.action](args.order_id)
    out = _output()
    if args.json:
        out.json(order)
    elif args.action == "show":
        print_order(out, order)
    else:
        done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[args.action]
        out.line(f"order {order.order_id} {done}")
    return 0


async def _transfers(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for

    async with client_for(args) as client:
        if args.stuck:
            page: TransferList = await client.stuck_transfers(destination=args.destination, limit=args.limit,
                                                              after=args.after)
        else:
            page = await client.transfers(state=args.state, destination=args.destination, limit=args.limit,
                                          after=args.after)
    out = _output()
    if args.json:
        out.json(page)
        return 0
    rows = [(t.file_name, t.destination, t.state, f"{t.attempts}/{page.max_attempts}",
             "never" if t.next_attempt_at is None else t.next_attempt_at, t.last_error) for t in page.transfers]
    out.table(rows, TRANSFER_COLUMNS, numeric=("attempts",),
              empty="(nothing stuck)" if args.stuck else "(no transfers)")
    if page.next_cursor is not None:
        out.note(f"(more than {len(page.transfers)}: the next page with --after {page.next_cursor})")
    return 0
