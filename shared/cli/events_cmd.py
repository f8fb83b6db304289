"""`obsflow events tail PATTERN`: follow events by topic pattern, live or from a point in the log."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from shared.cli.commands import help_of

if TYPE_CHECKING:
    from shared.events import Event


def register(sub: argparse._SubParsersAction) -> None:
    """Add `events tail`."""
    events = sub.add_parser("events", help=help_of("events"), description=help_of("events"))
    events_sub = events.add_subparsers(dest="events_command", required=True, metavar="SUBCOMMAND")
    tail = events_sub.add_parser(
        "tail", help="print events whose routing key matches PATTERN",
        description="Print the site's events whose routing key matches PATTERN as they happen, or from a point in "
        "the log (--from) and then as they happen, until --limit events or Ctrl-C (exit status 130). Connects as "
        "the site's reader account (`obsflow setup` creates it).",
    )
    tail.add_argument("pattern", help="topic pattern, e.g. '*.file.minted.#' or 'karoo.job.failed.XRFI'")
    tail.add_argument(
        "--from", dest="start", default=None,
        help="replay the log from 'first', 'last', an ISO time (2026-11-21T18:00:00Z) or an interval (2h, 1D)",
    )
    tail.add_argument("--limit", type=int, default=None, help="stop after this many events")
    tail.add_argument("--json", action="store_true", help="one full JSON event per line (JSON lines)")
    tail.set_defaults(func=_tail)


def format_event(event: Event, as_json: bool) -> str:
    """One line for a person (time, routing key, payload summary) or the whole event as JSON."""
    if as_json:
        return event.model_dump_json()
    summary = json.dumps(event.payload.model_dump(mode="json"), separators=(",", ":"))
    return f"{event.occurred_at.isoformat(timespec='seconds')}  {event.routing_key}  {summary[:200]}"


async def _tail(args: argparse.Namespace) -> int:
    from shared import credentials
    from shared.cli.output import Output
    from shared.client.events import InvalidStart, Subscription, stream_start
    from shared.errors import ConfigurationError
    from shared.settings import load_settings

    try:
        start = stream_start(args.start) if args.start is not None else None
    except InvalidStart as e:
        raise ConfigurationError(f"--from {e}") from None
    if args.limit is not None and args.limit < 1:
        raise ConfigurationError(f"--limit is a number of events, 1 or more; got {args.limit}")
    settings = load_settings(args.config)
    out = Output()

    def malformed(routing_key: str, reason: str) -> None:
        out.note(f"(malformed message on {routing_key}: {reason})")

    printed = 0
    async with Subscription(credentials.amqp_url(settings, "reader"), settings.bus.prefix, args.pattern,
                            start=start, max_event_bytes=settings.bus.max_event_bytes,
                            on_malformed=malformed) as events:
        async for event in events:
            out.line(format_event(event, args.json))
            printed += 1
            if args.limit is not None and printed >= args.limit:
                break
    return 0
