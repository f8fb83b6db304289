"""A work-queue consumer: each event handled once, its effect committed with its id (an inbox), then acked."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage

from shared.batching import Batcher
from shared.bus.acking import Disposition, after_failure
from shared.bus.backoff import Backoff
from shared.bus.dead_letters import EXCERPT_BYTES, record_dead_letter
from shared.bus.messages import (
    BODY_BYTES_HEADER,
    BODY_SHA256_HEADER,
    CONSUMER_HEADER,
    REASON_HEADER,
    publish_confirmed,
)
from shared.bus.publishers import publisher_refusal
from shared.bus.topology import Topology, WorkQueue
from shared.errors import BrokerUnavailable, ObsflowError
from shared.events import Event, decode_event
from shared.events.envelope import MAX_EVENT_BYTES
from shared.failures import describe, is_transient, suppress_transient
from shared.metrics import BusMetrics

log = structlog.get_logger()


class AlreadyHandled(ObsflowError):
    """This event's effect is already committed: the delivery is a duplicate."""


class DoneOnce(abc.ABC):
    """Work that must happen once: `record` marks it done in the caller's transaction (False when it was done
    already, and the caller then commits nothing of it and raises `duplicate()`)."""

    _pool: asyncpg.Pool

    @abc.abstractmethod
    async def record(self, conn: asyncpg.Connection) -> bool:
        """Mark the work done in the caller's open transaction; False if it already was."""

    @abc.abstractmethod
    def duplicate(self) -> AlreadyHandled:
        """The error a caller raises when `record` found the work done already."""

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that marks the work done; raises AlreadyHandled for a duplicate."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self.record(conn):
                raise self.duplicate()
            yield conn


class Once(DoneOnce):
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


WorkHandler = Callable[[Event, Once], Awaitable[None]]


@dataclass(frozen=True)
class BatchedWork:
    """A work handler that takes the deliveries waiting together (up to `max_items`) in one call.

    `handle` returns, for each (event, once) in order, None when its effect is committed or the exception that
    event's delivery is settled by (the ack policy, as for a single handler: AlreadyHandled acks a duplicate).
    If it raises an outage, every delivery of the batch waits it out; if it raises anything else, each delivery
    is handled again alone, so one bad delivery settles only itself. Up to `concurrency` calls run at once.
    """

    handle: Callable[[Sequence[tuple[Event, Once]]], Awaitable[Sequence[BaseException | None]]]
    max_items: int = 64
    concurrency: int = 2


WorkHandlerSpec = WorkHandler | BatchedWork


def _one_by_one(batched: BatchedWork) -> WorkHandler:
    """Each delivery submits itself and waits for its own result; the ones waiting meanwhile form the next batch."""

    async def run(items: Sequence[tuple[Event, Once]]) -> Sequence[BaseException | None]:
        try:
            return await batched.handle(items)
        except Exception as e:  # a whole batch failed: re-run each delivery alone (but an outage fails them alike)
            if len(items) == 1 or is_transient(e):
                raise
            log.warning("work_batch_isolating", error=describe(e), deliveries=len(items))
            return [await _alone(item) for item in items]

    async def _alone(item: tuple[Event, Once]) -> BaseException | None:
        try:
            (result,) = await batched.handle([item])
        except Exception as e:  # this delivery's own failure: it settles this delivery only
            return e
        return result

    batches: Batcher[tuple[Event, Once], None] = Batcher(
        run, max_items=batched.max_items, concurrency=batched.concurrency
    )

    async def handle(event: Event, once: Once) -> None:
        await batches.submit((event, once))

    return handle


class WorkQueueConsumer:
    """Consumes one quorum work queue, up to `prefetch` events in flight, settling each by the ack policy.

    It owns its broker connection and reconnects after an outage, so it is never left silently detached; `attached`
    tells readiness whether it is consuming right now.
    """

    def __init__(
        self,
        name: str,
        queue: WorkQueue,
        pool: asyncpg.Pool,
        amqp_url: str,
        topology: Topology,
        handler: WorkHandlerSpec,
        metrics: BusMetrics,
        *,
        prefetch: int = 8,
        retry_base_s: float = 0.2,
        retry_cap_s: float = 10.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
        shutdown_grace_s: float = 20.0,
        verify_publishers: bool = False,
    ) -> None:
        self.name = name
        self._queue_spec = queue
        self._pool = pool
        self._amqp_url = amqp_url
        self._topology = topology
        self._handle_one = _one_by_one(handler) if isinstance(handler, BatchedWork) else handler
        self._metrics = metrics
        self._prefetch = prefetch
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._max_event_bytes = max_event_bytes
        self._grace_s = shutdown_grace_s
        self._verify_publishers = verify_publishers
        self._session: _Session | None = None
        self._attached = asyncio.Event()
        self._stop = asyncio.Event()  # the running loop's: once set, retries in flight give their delivery back
        self._stop_requested = asyncio.Event()  # what `stop()` sets for a consumer `start()` began
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.handled = 0

    @property
    def attached(self) -> bool:
        """True while the consumer is consuming its queue (false during a broker outage, before start, after stop)."""
        return self._attached.is_set()

    @property
    def queue_name(self) -> str:
        """The full name of the queue consumed."""
        return self._topology.queue_name(self._queue_spec.name)

    # ----- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, reconnecting with backoff after broker outages; then let the deliveries in
        flight finish within the shutdown grace (the rest are handed back to the broker, never acked)."""
        backoff = Backoff()
        self._stop = stop
        while not stop.is_set():
            try:
                await self._consume(stop)
                backoff.reset()
            except Exception as e:  # the policy point: an outage is waited out, anything else ends the part
                if not is_transient(e):
                    raise
                log.warning("work_consumer_reconnect", consumer=self.name, error=describe(e))
                await backoff.wait(stop)

    async def start(self, timeout_s: float = 30.0) -> None:
        """Run in the background (see `run`) and return once attached; `stop()` ends it."""
        self._stop_requested.clear()
        self._task = asyncio.create_task(self.run(self._stop_requested))
        attached = asyncio.ensure_future(self._attached.wait())
        await asyncio.wait([attached, self._task], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        attached.cancel()
        if self._task.done():
            self._task.result()  # re-raise what ended it
        if not self.attached:
            raise BrokerUnavailable(f"work consumer {self.name} did not attach to {self.queue_name} in {timeout_s} s")

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop what `start` began: take no more deliveries, finish those in flight within `grace_s`, close."""
        if self._task is None:
            return
        if grace_s is not None:
            self._grace_s = grace_s
        self._stop_requested.set()
        await self._task
        self._task = None

    async def _consume(self, stop: asyncio.Event) -> None:
        """One connection's life: attach, consume until stop or until the broker goes away."""
        connection = await aio_pika.connect(self._amqp_url)
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        try:
            channel = await connection.channel()  # publisher confirms: a dead letter is acked only once it is stored
            channel.close_callbacks.add(lambda *_: lost.set())
            await channel.set_qos(prefetch_count=self._prefetch)
            dead = await channel.get_exchange(self._topology.dead_letter_exchange, ensure=False)
            queue = await channel.get_queue(self.queue_name, ensure=False)
            self._session = _Session(connection, dead)
            tag = await queue.consume(self._on_message)
            self._attached.set()
            log.info("work_consumer_attached", consumer=self.name, queue=queue.name)
            await _first_of(stop, lost)
            self._attached.clear()
            if not lost.is_set():
                with suppress_transient():
                    await queue.cancel(tag)
            await self._finish_in_flight()
            if lost.is_set() and not stop.is_set():
                raise BrokerUnavailable(f"work consumer {self.name} lost its broker connection")
        finally:
            self._attached.clear()
            self._session = None
            with suppress_transient():
                await connection.close()

    async def _finish_in_flight(self) -> None:
        """Let deliveries in flight end within the grace; cancel the rest (not acked: the broker redelivers them)."""
        if not self._in_flight:
            return
        _done, pending = await asyncio.wait(set(self._in_flight), timeout=self._grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("work_deliveries_handed_back", consumer=self.name, deliveries=len(pending))
            await asyncio.wait(pending)

    async def drain(self, timeout_s: float = 60.0, poll_s: float = 0.05) -> None:
        """Return once the queue is empty and nothing is in flight (twice in a row, to cover redeliveries)."""
        async with asyncio.timeout(timeout_s):
            quiet = 0
            while quiet < 2:
                ready = await self._ready_count()
                quiet = quiet + 1 if ready == 0 and not self._in_flight else 0
                await asyncio.sleep(poll_s)  # a poll interval between checks of a condition, not a wait for time

    async def _ready_count(self) -> int:
        await self._attached.wait()
        session = self._session
        if session is None:
            raise BrokerUnavailable(f"work consumer {self.name} is not attached")
        channel = await session.connection.channel()
        try:
            queue = await channel.declare_queue(self.queue_name, passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    # ----- settling deliveries

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._handle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = decode_event(message.body, max_bytes=self._max_event_bytes)
        except Exception as e:  # whatever decoding raises, the message is set aside at once: input never blocks
            await self._dead_letter(message, describe(e), None)
            return
        refusal = publisher_refusal(event, message.user_id) if self._verify_publishers else None
        if refusal is not None:
            await self._dead_letter(message, refusal, event)
            return
        once = Once(self._pool, self.name, event)
        backoff = Backoff(self._retry_base_s, self._retry_cap_s)
        last_delivery = _deliveries_before(message) + 1 >= self._queue_spec.delivery_limit
        attempts = 0
        with structlog.contextvars.bound_contextvars(event_id=str(event.event_id)):
            while True:
                try:
                    await self._handle_one(event, once)
                except AlreadyHandled:
                    self._metrics.duplicates.labels(self.name).inc()
                    await _ack(message)
                    return
                except Exception as e:  # the policy point: every failure is classified and settled here
                    attempts += 1
                    disposition = after_failure(e, attempts, last_delivery=last_delivery)
                    log.warning("work_event_failed", consumer=self.name, error=describe(e), attempts=attempts,
                                outcome=disposition.value)
                    if disposition is Disposition.DEAD_LETTER:
                        await self._dead_letter(message, describe(e), event)
                        return
                    self._metrics.retried.labels(self.name, e.__class__.__name__).inc()
                    if not await self._wait_to_retry(message, backoff):
                        return  # stopping, or the channel is gone: the broker hands the delivery out again
                    continue
                self.handled += 1
                self._metrics.handled.labels(self.name, event.type).inc()
                await _ack(message)
                return

    async def _wait_to_retry(self, message: AbstractIncomingMessage, backoff: Backoff) -> bool:
        """Keep the delivery and wait before the next attempt; False when it is no longer ours to retry."""
        if self._stop.is_set() or message.channel.is_closed:
            return False
        await backoff.wait(self._stop)
        return not (self._stop.is_set() or message.channel.is_closed)

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str, event: Event | None) -> None:
        """Copy the message to the dead-letter exchange with its reason, record it, then ack; outages waited out."""
        backoff = Backoff(self._retry_base_s, self._retry_cap_s)
        while True:
            try:
                await self._publish_dead(message, reason)
                await record_dead_letter(self._pool, self.name, event.event_id if event else None,
                                         message.routing_key, reason, message.body)
                break
            except Exception as e:  # storing the dead letter failed: wait out an outage, else hand it back
                if not is_transient(e):
                    log.error("dead_letter_failed", consumer=self.name, reason=reason, error=describe(e))
                    with suppress_transient():
                        await message.nack(requeue=True)
                    return
                log.warning("dead_letter_retry", consumer=self.name, error=describe(e))
                if not await self._wait_to_retry(message, backoff):
                    return
        log.error("event_dead_lettered", consumer=self.name, reason=reason, routing_key=message.routing_key)
        self._metrics.dead_lettered.labels(self.name, reason.split(":", 1)[0]).inc()
        await _ack(message)

    async def _publish_dead(self, message: AbstractIncomingMessage, reason: str) -> None:
        session = self._session
        if session is None:
            raise BrokerUnavailable(f"work consumer {self.name} is not attached")
        headers = dict(message.headers or {})
        headers.update({REASON_HEADER: reason, CONSUMER_HEADER: self.name})
        if message.user_id:  # who published it (the copy is ours: its own user id must be this consumer's)
            headers["x-obsflow-published-by"] = message.user_id
        body = message.body
        if len(body) > self._max_event_bytes:  # not kept whole: its excerpt, size and hash say what it was
            headers.update({BODY_BYTES_HEADER: len(body), BODY_SHA256_HEADER: hashlib.sha256(body).hexdigest()})
            body = body[:EXCERPT_BYTES]
        await publish_confirmed(
            session.dead_exchange,
            aio_pika.Message(
                body, headers=headers, message_id=message.message_id, type=message.type,
                content_type=message.content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            message.routing_key or self._queue_spec.name,
        )


@dataclass(frozen=True)
class _Session:
    connection: AbstractConnection
    dead_exchange: AbstractExchange


def _deliveries_before(message: AbstractIncomingMessage) -> int:
    """How many times the quorum queue delivered this message before (its `x-delivery-count`)."""
    value = (message.headers or {}).get("x-delivery-count", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


async def _ack(message: AbstractIncomingMessage) -> None:
    # The effect is committed: an ack lost with the channel only means a redelivery, which `Once` recognises.
    with suppress_transient():
        await message.ack()


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
