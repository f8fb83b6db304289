"""A work-queue consumer: each event handled once, its effect committed with its id (an inbox), then acked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from shared.batching import Batcher
from shared.bus.acking import Disposition, classify, describe
from shared.bus.messages import REASON_HEADER
from shared.bus.publishers import publisher_refusal
from shared.bus.topology import Topology, WorkQueue
from shared.errors import MalformedEvent, ObsflowError
from shared.events import Event, decode_event
from shared.metrics import BusMetrics

log = structlog.get_logger()


class AlreadyHandled(ObsflowError):
    """This event's effect is already committed: the delivery is a duplicate."""


class Once:
    """What a work handler commits its effect through, so that it happens once per event id."""

    def __init__(self, pool: asyncpg.Pool, consumer: str, event: Event) -> None:
        self._pool = pool
        self._consumer = consumer
        self._event = event

    @staticmethod
    async def done_among(pool: asyncpg.Pool, onces: Sequence[Once]) -> list[bool]:
        """For each event, True when an earlier delivery already committed its effect (skip slow work); one query."""
        if not onces:
            return []
        done = {
            (r["consumer"], r["event_id"])
            for r in await pool.fetch(
                "SELECT consumer, event_id FROM handled_events"
                " WHERE (consumer, event_id) IN (SELECT * FROM unnest($1::text[], $2::uuid[]))",
                [once._consumer for once in onces], [once._event.event_id for once in onces],
            )
        }
        return [(once._consumer, once._event.event_id) in done for once in onces]

    async def record(self, conn: asyncpg.Connection) -> bool:
        """Record the event as handled in the caller's open transaction; False if it already was (a duplicate).

        For handlers whose effect is committed in a transaction they share with other events' effects (a batch):
        the caller must not commit this event's effect when False is returned.
        """
        return bool(
            await conn.fetchval(
                "INSERT INTO handled_events (consumer, event_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                self._consumer, self._event.event_id,
            )
        )

    @staticmethod
    async def record_all(conn: asyncpg.Connection, onces: Sequence[Once]) -> list[bool]:
        """`record` for many events in one statement; for each, False if it was handled already (or listed twice)."""
        if not onces:
            return []
        rows = await conn.fetch(
            "INSERT INTO handled_events (consumer, event_id) SELECT * FROM unnest($1::text[], $2::uuid[])"
            " ON CONFLICT DO NOTHING RETURNING consumer, event_id",
            [once._consumer for once in onces], [once._event.event_id for once in onces],
        )
        fresh = {(r["consumer"], r["event_id"]) for r in rows}
        recorded = []
        for once in onces:
            key = (once._consumer, once._event.event_id)
            recorded.append(key in fresh)
            fresh.discard(key)  # the same event twice in one batch: only its first listing is fresh
        return recorded

    def duplicate(self) -> AlreadyHandled:
        """The error a handler raises when `record` found the event handled already."""
        return AlreadyHandled(f"event {self._event.event_id} already handled by {self._consumer}")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that records the event as handled; raises AlreadyHandled for a duplicate."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self.record(conn):
                raise self.duplicate()
            yield conn


WorkHandler = Callable[[Event, Once], Awaitable[None]]


@dataclass(frozen=True)
class BatchedWork:
    """A work handler that takes the deliveries waiting together (up to `max_items`) in one call.

    `handle` returns, for each (event, once) in order, None when its effect is committed or the exception that
    event's delivery is settled by (the ack policy, as for a single handler: AlreadyHandled acks a duplicate).
    If it raises, every delivery of the batch is settled by that error. Up to `concurrency` calls run at once.
    """

    handle: Callable[[Sequence[tuple[Event, Once]]], Awaitable[Sequence[BaseException | None]]]
    max_items: int = 64
    concurrency: int = 2


WorkHandlerSpec = WorkHandler | BatchedWork


def _one_by_one(batched: BatchedWork) -> WorkHandler:
    """Each delivery submits itself and waits for its own result; the ones waiting meanwhile form the next batch."""
    batches: Batcher[tuple[Event, Once], None] = Batcher(
        batched.handle, max_items=batched.max_items, concurrency=batched.concurrency
    )

    async def handle(event: Event, once: Once) -> None:
        await batches.submit((event, once))

    return handle


class WorkQueueConsumer:
    """Consumes one quorum work queue with up to `prefetch` events in flight, settling each by the ack policy."""

    def __init__(
        self,
        name: str,
        queue: WorkQueue,
        pool: asyncpg.Pool,
        connection: AbstractRobustConnection,
        topology: Topology,
        handler: WorkHandlerSpec,
        metrics: BusMetrics,
        *,
        prefetch: int = 8,
        retry_base_s: float = 0.2,
        verify_publishers: bool = False,
    ) -> None:
        self.name = name
        self._queue_spec = queue
        self._pool = pool
        self._connection = connection
        self._topology = topology
        self._handle_one = _one_by_one(handler) if isinstance(handler, BatchedWork) else handler
        self._metrics = metrics
        self._prefetch = prefetch
        self._retry_base_s = retry_base_s
        self._verify_publishers = verify_publishers
        self._channel: AbstractChannel | None = None
        self._dead_exchange: AbstractExchange | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.handled = 0

    async def start(self) -> None:
        """Attach to the queue and start handling deliveries."""
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._dead_exchange = await self._channel.get_exchange(self._topology.dead_letter_exchange, ensure=False)
        queue = await self._channel.get_queue(self._topology.queue_name(self._queue_spec.name), ensure=False)
        self._tag = await queue.consume(self._on_message)
        log.info("work_consumer_attached", consumer=self.name, queue=queue.name)

    async def stop(self, grace_s: float = 20.0) -> None:
        """Stop taking deliveries, let those in flight finish within `grace_s`, then close the channel."""
        if self._channel is None:
            return
        if self._tag is not None and not self._channel.is_closed:
            queue = await self._channel.get_queue(self._topology.queue_name(self._queue_spec.name), ensure=False)
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await queue.cancel(self._tag)
        if self._in_flight:
            _done, pending = await asyncio.wait(set(self._in_flight), timeout=grace_s)
            for task in pending:  # not acked: the broker hands these to another worker
                task.cancel()
        if not self._channel.is_closed:
            await self._channel.close()
        self._channel = None

    async def drain(self, timeout_s: float = 60.0, poll_s: float = 0.05) -> None:
        """Return once the queue is empty and nothing is in flight (twice in a row, to cover redeliveries)."""
        async with asyncio.timeout(timeout_s):
            quiet = 0
            while quiet < 2:
                ready = await self._ready_count()
                quiet = quiet + 1 if ready == 0 and not self._in_flight else 0
                await asyncio.sleep(poll_s)  # a poll interval between checks of a condition, not a wait for time

    async def _ready_count(self) -> int:
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(self._topology.queue_name(self._queue_spec.name), passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            disposition, reason = await self._handle(message)
            await self._settle(message, disposition, reason)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> tuple[Disposition, str | None]:
        try:
            event = decode_event(message.body)
        except MalformedEvent as e:
            return Disposition.DEAD_LETTER, describe(e)
        refusal = publisher_refusal(event, message.user_id) if self._verify_publishers else None
        if refusal is not None:
            return Disposition.DEAD_LETTER, refusal
        with structlog.contextvars.bound_contextvars(event_id=str(event.event_id)):
            try:
                await self._handle_one(event, Once(self._pool, self.name, event))
            except AlreadyHandled:
                self._metrics.duplicates.labels(self.name).inc()
                return Disposition.ACK, None
            except Exception as e:  # the policy point: every failure is classified and settled below
                disposition = classify(e)
                log.warning("work_event_failed", consumer=self.name, error=describe(e), outcome=disposition.value)
                return disposition, describe(e)
        self.handled += 1
        self._metrics.handled.labels(self.name, event.type).inc()
        return Disposition.ACK, None

    async def _settle(self, message: AbstractIncomingMessage, disposition: Disposition, reason: str | None) -> None:
        if disposition is Disposition.ACK:
            await message.ack()
        elif disposition is Disposition.DEAD_LETTER:
            await self._dead_letter(message, reason or "unknown")
            await message.ack()
        else:
            attempts = int(str((message.headers or {}).get("x-delivery-count", 0) or 0))
            self._metrics.retried.labels(self.name, (reason or "").split(":", 1)[0]).inc()
            # Quorum queues count deliveries and dead-letter past the limit, so retries are bounded.
            await asyncio.sleep(min(5.0, self._retry_base_s * 2**attempts))
            await message.nack(requeue=True)

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        log.error("event_dead_lettered", consumer=self.name, reason=reason, routing_key=message.routing_key)
        self._metrics.dead_lettered.labels(self.name, reason.split(":", 1)[0]).inc()
        if self._dead_exchange is None:
            raise RuntimeError("dead-letter exchange missing: start() was not called")
        headers = dict(message.headers or {})
        headers.update({REASON_HEADER: reason, "x-obsflow-consumer": self.name})
        await self._dead_exchange.publish(
            aio_pika.Message(
                message.body, headers=headers, message_id=message.message_id, type=message.type,
                content_type=message.content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=message.routing_key or self._queue_spec.name,
            mandatory=False,
        )
        await self._pool.execute(
            "INSERT INTO dead_letters (consumer, routing_key, reason, body) VALUES ($1, $2, $3, $4)",
            self.name, message.routing_key, reason, message.body,
        )
