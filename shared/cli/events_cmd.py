"""`obsflow events tail PATTERN`: follow events by topic pattern, live or from a point in the log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
from datetime import UTC, datetime

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage

from shared import credentials
from shared.bus.messages import marker_of
from shared.bus.patterns import topic_matches
from shared.bus.topology import Topology
from shared.errors import BrokerUnavailable, ConfigurationError, MalformedEvent
from shared.events import Event, decode_event
from shared.settings import load_settings

_INTERVAL = re.compile(r"^\d+[smhDMY]$")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `events tail`."""
    events = sub.add_parser("events", help="follow the event log")
    events_sub = events.add_subparsers(dest="events_command", required=True, metavar="SUBCOMMAND")
    tail = events_sub.add_parser("tail", help="print events whose routing key matches PATTERN")
    tail.add_argument("pattern", help="topic pattern, e.g. '*.file.minted.#' or 'karoo.job.failed.XRFI'")
    tail.add_argument(
        "--from", dest="start", default=None,
        help="replay the log from 'first', 'last', an ISO time (2026-11-21T18:00:00Z) or an interval (2h, 1D)",
    )
    tail.add_argument("--limit", type=int, default=None, help="stop after this many events")
    tail.add_argument("--json", action="store_true", help="one full JSON event per line")
    tail.set_defaults(func=_tail)


def stream_start(text: str) -> str | datetime:
    """The `x-stream-offset` for a --from value, or a clear error."""
    if text in ("first", "last", "next") or _INTERVAL.match(text):
        return text
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"--from {text!r} is not 'first', 'last', an ISO time or an interval like 2h"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_event(event: Event, as_json: bool) -> str:
    """One line for a person (time, routing key, payload summary) or the whole event as JSON."""
    if as_json:
        return event.model_dump_json()
    summary = json.dumps(event.payload.model_dump(mode="json"), separators=(",", ":"))
    return f"{event.occurred_at.isoformat(timespec='seconds')}  {event.routing_key}  {summary[:200]}"


async def _tail(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    topology = Topology.from_settings(settings.bus)
    start = stream_start(args.start) if args.start else None
    try:
        connection = await aio_pika.connect(credentials.amqp_url(settings, "reader"))
    except (aio_pika.exceptions.AMQPError, OSError) as e:
        raise BrokerUnavailable(f"cannot reach RabbitMQ: {e}; is it running? (make services)") from e
    done = asyncio.Event()
    printed = 0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal printed
        await message.ack()
        if done.is_set() or marker_of(message) is not None:
            return
        if start is not None and not topic_matches(args.pattern, message.routing_key or ""):
            return
        try:
            event = decode_event(message.body, max_bytes=settings.bus.max_event_bytes)
        except MalformedEvent as e:
            print(f"(malformed message on {message.routing_key}: {e})", flush=True)
            return
        print(format_event(event, args.json), flush=True)
        printed += 1
        if args.limit is not None and printed >= args.limit:
            done.set()

    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=200)
        try:
            if start is None:
                queue = await channel.declare_queue(exclusive=True, auto_delete=True)
                await queue.bind(topology.events_exchange, routing_key=args.pattern)
                await queue.consume(on_message)
            else:
                stream = await channel.get_queue(topology.log_stream, ensure=False)
                await stream.consume(on_message, arguments={"x-stream-offset": start})
        except aiormq.exceptions.ChannelNotFoundEntity as e:
            raise ConfigurationError(
                f"this site's bus ({topology.events_exchange}, {topology.log_stream}) does not exist yet; start the "
                "services once (make up) or check OBSFLOW_BUS__PREFIX"
            ) from e
        except aio_pika.exceptions.AMQPError as e:
            raise BrokerUnavailable(f"RabbitMQ refused the subscription: {e}") from e
        with contextlib.suppress(asyncio.CancelledError):
            await done.wait()
    return 0
