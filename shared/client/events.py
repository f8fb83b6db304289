"""Subscribing to a site's events by topic pattern: live, or replayed from a point in the log and then live.

One implementation for `obsflow events tail` and the client's `subscribe`. Live: a queue of the subscriber's own
(exclusive, deleted when it leaves) bound to the events exchange with the pattern. From a point in time: the log
stream read from that offset, filtered by the pattern here (a stream has no bindings), then on as events arrive.
Deliveries are acknowledged as they are taken, so at most `prefetch` wait in memory however slow the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from shared.bus.messages import marker_of, stream_offset
from shared.bus.patterns import topic_matches
from shared.errors import BrokerUnavailable, ConfigurationError, MalformedEvent, ObsflowError
from shared.events import Event, decode_event

log = structlog.get_logger()

Start = str | datetime | int
# Called with a message's routing key and why it is not an event (it is skipped).
OnMalformed = Callable[[str, str], None]
_INTERVAL = re.compile(r"^\d+[smhDMY]$")
_NAMED = ("first", "last", "next")


class InvalidStart(ObsflowError):
    """A point in the log that is none of 'first', 'last', 'next', a time, an interval or an offset."""


def stream_start(value: Start) -> Start:
    """The `x-stream-offset` for a point in the log: 'first', 'last', 'next', an interval ('2h', '1D'), an ISO
    time ('2026-11-21T18:00:00Z'; UTC when it has no offset), a datetime or an offset; InvalidStart otherwise."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidStart(f"{value} is not an offset in the log (offsets start at 0)")
        return value
    if not isinstance(value, str):
        raise InvalidStart(f"{value!r} is not a point in the log")
    if value in _NAMED or _INTERVAL.match(value):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidStart(f"{value!r} is not 'first', 'last', an ISO time or an interval like 2h") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _log_malformed(routing_key: str, reason: str) -> None:
    log.warning("subscription_malformed_message", routing_key=routing_key, reason=reason)


class Subscription:
    """The events whose routing key matches `pattern`, as an async iterator; use it as `async with`.

        async with Subscription(url, "obsflow", "*.file.minted.#", start="2h") as events:
            async for event in events:
                ...

    `last_offset` is the log offset of the last message read when reading the log (`start` given): start again
    from `last_offset + 1` to resume without gaps or repeats.
    """

    def __init__(self, amqp_url: str, bus_prefix: str, pattern: str, *, start: Start | None = None,
                 max_event_bytes: int = 1024 * 1024, on_malformed: OnMalformed | None = None,
                 prefetch: int = 200) -> None:
        self.pattern = pattern
        self.start = None if start is None else stream_start(start)
        self.last_offset: int | None = None
        self._url = amqp_url
        self._exchange, self._stream = f"{bus_prefix}.events", f"{bus_prefix}.log"
        self._max_event_bytes = max_event_bytes
        self._on_malformed = on_malformed or _log_malformed
        self._prefetch = prefetch
        self._connection: AbstractConnection | None = None
        self._deliveries: asyncio.Queue[AbstractIncomingMessage | BaseException] = asyncio.Queue()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def __aenter__(self) -> Subscription:
        try:
            self._connection = await aio_pika.connect(self._url)
        except aio_pika.exceptions.ProbableAuthenticationError as e:
            raise ConfigurationError(f"RabbitMQ refused the account in the broker URL ({e}); the reader account "
                                     "is created by `obsflow setup`") from e
        except (aio_pika.exceptions.AMQPError, OSError) as e:
            raise BrokerUnavailable(f"cannot reach RabbitMQ: {e}; is it running? (make services)") from e
        self._connection.close_callbacks.add(self._on_close)
        try:
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            await self._consume(channel)
        except BaseException:
            await self._connection.close()
            raise
        return self

    async def _consume(self, channel: AbstractChannel) -> None:
        try:
            if self.start is None:
                self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
                await self._queue.bind(self._exchange, routing_key=self.pattern)
                self._tag = await self._queue.consume(self._deliveries.put)
            else:
                self._queue = await channel.get_queue(self._stream, ensure=False)
                self._tag = await self._queue.consume(self._deliveries.put,
                                                      arguments={"x-stream-offset": self.start})
        except aiormq.exceptions.ChannelNotFoundEntity as e:
            raise ConfigurationError(
                f"this site's bus ({self._exchange}, {self._stream}) does not exist yet; start the services once "
                "(make up) or check OBSFLOW_BUS__PREFIX"
            ) from e
        except aio_pika.exceptions.AMQPError as e:
            raise BrokerUnavailable(f"RabbitMQ refused the subscription: {e}") from e

    def _on_close(self, _sender: object, reason: BaseException | None) -> None:
        self._deliveries.put_nowait(BrokerUnavailable(
            f"the broker closed the subscription ({reason or 'connection closed'}); subscribe again"
            + (" from last_offset + 1 to resume" if self.start is not None else "")))

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop consuming and disconnect (a live subscription's queue goes with it)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        connection.close_callbacks.discard(self._on_close)
        if not connection.is_closed:
            # Cancelled rather than left with deliveries in hand: a stream cannot take them back (no nack). An
            # error here means the channel is gone already, with nothing left to cancel.
            if self._queue is not None and self._tag is not None:
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await self._queue.cancel(self._tag)
            await connection.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._connection is None:
            raise ObsflowError("use the subscription as `async with ... as events:` before iterating")
        while True:
            item = await self._deliveries.get()
            if isinstance(item, BaseException):
                raise item
            await item.ack()
            event = self._event_of(item)
            if event is not None:
                return event

    def _event_of(self, message: AbstractIncomingMessage) -> Event | None:
        if marker_of(message) is not None:
            return None  # a drain marker in the log, not an event
        routing_key = message.routing_key or ""
        if self.start is not None:
            self.last_offset = stream_offset(message)
            if not topic_matches(self.pattern, routing_key):
                return None
        try:
            return decode_event(message.body, max_bytes=self._max_event_bytes)
        except MalformedEvent as e:
            self._on_malformed(routing_key, str(e))
            return None
