"""Publishing without an outbox (instruments, the CLI) that rides through broker restarts.

An instrument has no database transaction to hang an outbox on, so it keeps its own: a local buffer of the events
the broker has not confirmed yet. Each event is sent mandatory and confirmed, and leaves the buffer only once the
broker has routed and confirmed it. When the connection fails (a broker restart: CONNECTION_FORCED, then a refused
connection for a while), the sender reconnects with backoff, waits until the log stream takes messages again
(`wait_for_log`: just after a restart the broker confirms events the stream drops) and sends again, with the same
event ids, whatever was not confirmed. A confirm lost with the connection means that event may arrive twice:
consumers deduplicate by event id, so every event is applied once. docs/instruments.md explains it to instrument
builders.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from types import TracebackType

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange

from shared.bus.backoff import Backoff
from shared.bus.messages import event_message, publish_confirmed, wait_for_log
from shared.bus.topology import Topology
from shared.errors import BrokerUnavailable
from shared.events import Event, encode_event
from shared.failures import describe, is_transient

log = structlog.get_logger()

_Outgoing = tuple[str, aio_pika.Message]  # routing key, message


class ConfirmedPublisher:
    """Sends events to `topology`'s events exchange from a bounded local buffer, in order, each confirmed, reconnecting.

    `publish` returns once the event is in the buffer (it waits only while the buffer is full); `flush` waits until
    everything published so far is confirmed; `close` flushes and stops. Use it as an async context manager.
    `user_id`, when given, is stamped on every message (the broker checks it is the connection's user).
    """

    def __init__(
        self, amqp_url: str, topology: Topology, *, max_buffered: int = 10_000, in_flight: int = 256,
        reconnect_cap_s: float = 5.0, user_id: str | None = None,
    ) -> None:
        self._url = amqp_url
        self._user_id = user_id
        self._topology = topology
        self._max_buffered = max_buffered
        self._in_flight = in_flight
        self._reconnect_cap_s = reconnect_cap_s
        self._buffer: OrderedDict[uuid.UUID, _Outgoing] = OrderedDict()
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self.confirmed = 0
        self.reconnects = 0

    @property
    def unconfirmed(self) -> int:
        """Events in the buffer: published here, not yet confirmed by the broker."""
        return len(self._buffer)

    async def __aenter__(self) -> ConfirmedPublisher:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start the background sender."""
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_forever(), name="confirmed-publisher")

    async def publish(self, event: Event) -> None:
        """Put `event` in the buffer to be sent (waiting while the buffer is full); the same id is kept on re-sends."""
        self._raise_if_failed()
        message = event_message(str(event.event_id), event.type, encode_event(event))
        message.user_id = self._user_id
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._buffer) < self._max_buffered or self._failure is not None)
            self._raise_if_failed()
            self._buffer[event.event_id] = (event.routing_key, message)
            self._changed.notify_all()

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the broker has confirmed every event published so far."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: not self._buffer or self._failure is not None)
        self._raise_if_failed()

    async def close(self, timeout_s: float | None = 60.0) -> None:
        """Flush (within `timeout_s`), then stop the sender; BrokerUnavailable if events were left unconfirmed."""
        try:
            await self.flush(timeout_s)
        except TimeoutError:
            raise BrokerUnavailable(
                f"{len(self._buffer)} events were not confirmed by the broker within {timeout_s} s; publish them again"
            ) from None
        finally:
            self._closing.set()
            async with self._changed:
                self._changed.notify_all()
            if self._sender is not None:
                self._sender.cancel()
                await asyncio.gather(self._sender, return_exceptions=True)
                self._sender = None

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise BrokerUnavailable(f"the publisher stopped: {describe(self._failure)}") from self._failure

    async def _send_forever(self) -> None:
        backoff = Backoff(base_s=0.1, cap_s=self._reconnect_cap_s)
        while not self._closing.is_set():
            try:
                await self._send_on_one_connection()
                backoff.reset()
            except Exception as e:  # the policy point: a broker outage is ridden through, anything else is fatal
                if not is_transient(e):
                    async with self._changed:
                        self._failure = e
                        self._changed.notify_all()
                    raise
                self.reconnects += 1
                log.warning("publisher_reconnect", error=describe(e), unconfirmed=len(self._buffer),
                            retry_in_s=round(backoff.peek(), 2))
                await backoff.wait(self._closing)

    async def _send_on_one_connection(self) -> None:
        connection = await aio_pika.connect(self._url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await wait_for_log(channel, self._topology)  # a restarted broker confirms what a stream not up drops
            exchange = await channel.get_exchange(self._topology.events_exchange, ensure=False)
            while not self._closing.is_set():
                async with self._changed:
                    await self._changed.wait_for(lambda: bool(self._buffer) or self._closing.is_set())
                    batch = list(self._buffer.items())[: self._in_flight]
                if batch:
                    await self._send(exchange, batch)

    async def _send(self, exchange: AbstractExchange, batch: list[tuple[uuid.UUID, _Outgoing]]) -> None:
        """Send a batch with its confirms in flight together; drop the confirmed, raise the first failure."""
        results = await asyncio.gather(
            *(publish_confirmed(exchange, message, routing_key) for _, (routing_key, message) in batch),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        async with self._changed:
            for (event_id, _), result in zip(batch, results, strict=True):
                if not isinstance(result, BaseException):
                    self._buffer.pop(event_id, None)
                    self.confirmed += 1
            self._changed.notify_all()
        if failures:
            raise failures[0]
