"""A stream consumer: applies events from the log in batches, checkpointing the offset with the effect."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from shared.bus.acking import Disposition, after_failure
from shared.bus.backoff import Backoff
from shared.bus.dead_letters import record_dead_letter
from shared.bus.messages import MARKER_HEADER, marker_of, stream_offset
from shared.bus.publishers import publisher_refusal
from shared.bus.topology import Topology
from shared.errors import BrokerUnavailable, ObsflowError
from shared.events import Event, decode_event
from shared.events.envelope import MAX_EVENT_BYTES
from shared.failures import describe, is_transient, suppress_transient
from shared.locks import Leader, LeadershipLost, LeadershipTaken, lock_key
from shared.metrics import BusMetrics

log = structlog.get_logger()

EventHandler = Callable[[asyncpg.Connection, Event], Awaitable[None]]


@dataclass(frozen=True)
class Batched:
    """A handler that applies a run of consecutive events of one type in one call (e.g. one executemany)."""

    apply: Callable[[asyncpg.Connection, Sequence[Event]], Awaitable[None]]


StreamHandler = EventHandler | Batched


class ConsumerBusy(ObsflowError):
    """Another process is already running this consumer."""


@dataclass(frozen=True)
class _Entry:
    offset: int
    marker: str | None
    event: Event | None
    error: str | None
    body: bytes
    routing_key: str | None


class StreamConsumer:
    """Reads the site's log stream from its stored offset + 1 and applies `handlers` (by event type).

    Each batch is one transaction: the handlers' writes, the ids of the events handled (so a duplicate
    publication is skipped) and the new offset commit together; the broker is acked only after the commit.
    """

    def __init__(
        self,
        name: str,
        pool: asyncpg.Pool,
        amqp_url: str,
        topology: Topology,
        handlers: Mapping[str, StreamHandler],
        metrics: BusMetrics,
        *,
        batch_size: int = 500,
        linger_s: float = 0.02,
        max_event_bytes: int = MAX_EVENT_BYTES,
        shutdown_grace_s: float = 20.0,
        verify_publishers: bool = False,
    ) -> None:
        self.name = name
        self._pool = pool
        self._amqp_url = amqp_url
        self._topology = topology
        self._handlers = dict(handlers)
        self._metrics = metrics
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._max_event_bytes = max_event_bytes
        self._grace_s = shutdown_grace_s
        self._verify_publishers = verify_publishers
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._connection: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._leader = Leader(pool, lock_key("stream", topology.log_stream, name), f"stream consumer {name}")
        self.applied = 0

    # ----- lifecycle

    @property
    def attached(self) -> bool:
        """True while the consumer is attached to the stream and applying events."""
        return self._ready.is_set()

    @property
    def standby(self) -> bool:
        """True while another process holds this consumer's lock and this one waits to take over."""
        return self._leader.standby

    async def run(self, stop: asyncio.Event, *, wait_for_lock: bool = True) -> None:
        """Consume until `stop` is set; reconnect with backoff after broker or database outages.

        A database restart ends the session holding the consumer's lock: the consumer stops applying at once,
        then takes the lock again (or stands by while another process holds it) and resumes from its checkpoint.
        """
        backoff = Backoff()
        while not stop.is_set():
            try:
                async with self._locked(stop, wait=wait_for_lock) as leading:
                    if leading:
                        await self._consume(stop)
            except LeadershipLost as e:
                log.warning("stream_consumer_lock_lost", consumer=self.name, error=describe(e))
                await backoff.wait(stop)
            except Exception as e:  # the policy point: outages are waited out, anything else ends the part
                if not is_transient(e):
                    raise
                log.warning("stream_consumer_reconnect", consumer=self.name, error=describe(e))
                await backoff.wait(stop)

    async def rebuild(self, reset_sql: Sequence[str], timeout_s: float = 3600.0) -> int:
        """Empty the projection (`reset_sql`), forget the checkpoint, replay the whole log; return events applied."""
        stop = asyncio.Event()
        async with self._locked(stop, wait=False):
            async with self._pool.acquire() as conn, conn.transaction():
                for statement in reset_sql:
                    await conn.execute(statement)
                await conn.execute("DELETE FROM handled_events WHERE consumer = $1", self.name)
                await conn.execute("DELETE FROM stream_checkpoints WHERE consumer = $1", self.name)
                await conn.execute("DELETE FROM dead_letters WHERE consumer = $1", self.name)
            self.applied = 0
            task = asyncio.create_task(self._consume(stop))
            try:
                await self.drain(timeout_s)
            finally:
                stop.set()
                await task
        return self.applied

    async def _consume(self, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff.reset()
            except Exception as e:  # a broker outage is waited out here; losing the lock ends this leadership
                if not is_transient(e):
                    raise
                log.warning("stream_consumer_reconnect", consumer=self.name, error=describe(e))
                await backoff.wait(stop)

    @contextlib.asynccontextmanager
    async def _locked(self, stop: asyncio.Event, *, wait: bool) -> AsyncIterator[bool]:
        """Hold this consumer's advisory lock: one process applies a consumer's events at a time."""
        try:
            async with self._leader.leading(stop, wait=wait, retry_s=1.0) as leading:
                yield leading
        except LeadershipTaken as e:
            raise ConsumerBusy(f"consumer {self.name!r} is running elsewhere; stop that service first") from e

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the consumer is attached to the stream."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def drain(self, timeout_s: float = 60.0) -> None:
        """Return once every event in the stream at the time of the call has been applied."""
        await self.wait_ready(timeout_s)
        marker = uuid.uuid4().hex
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker] = done
        try:
            if self._connection is None:
                raise BrokerUnavailable(f"consumer {self.name!r} lost its broker connection while draining")
            channel = await self._connection.channel()
            try:
                control = await channel.get_exchange(self._topology.control_exchange, ensure=False)
                await control.publish(
                    aio_pika.Message(b"", headers={MARKER_HEADER: marker}), routing_key=self._topology.log_stream
                )
            finally:
                await channel.close()
            await asyncio.wait_for(done, timeout_s)
        finally:
            self._markers.pop(marker, None)

    def _lock_lost(self) -> bool:
        """True once the session holding this consumer's lock has ended."""
        return self._leader.lost()

    def _lock_key(self) -> int:
        return self._leader.key

    async def _resume_offset(self) -> int | str:
        stored = await self._pool.fetchval('SELECT "offset" FROM stream_checkpoints WHERE consumer = $1', self.name)
        return "first" if stored is None else stored + 1

    async def _session(self, stop: asyncio.Event) -> None:
        connection = await aio_pika.connect(self._amqp_url)
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._stopping = False
        try:
            channel = await connection.channel()
            channel.close_callbacks.add(lambda *_: lost.set())
            await channel.set_qos(prefetch_count=self._batch_size * 2)
            queue = await channel.get_queue(self._topology.log_stream, ensure=False)
            start = await self._resume_offset()
            await queue.consume(inbox.put, arguments={"x-stream-offset": start})
            self._connection = connection
            self._ready.set()
            log.info("stream_consumer_attached", consumer=self.name, offset=start)
            worker = asyncio.create_task(self._process(inbox))
            await _until_any(worker, stop, lost)
            self._stopping = True
            if worker.done():
                worker.result()  # re-raise what ended the worker
            else:
                # Finish the batch in hand within the grace; one stuck on a dead database is abandoned: it was
                # neither acked nor checkpointed, so it is read again from the stream.
                _done, pending = await asyncio.wait([worker], timeout=self._grace_s)
                for task in pending:
                    task.cancel()
                if worker.done() and not worker.cancelled() and (error := worker.exception()) is not None:
                    log.warning("stream_batch_abandoned", consumer=self.name, error=describe(error))
            if lost.is_set() and not stop.is_set():
                raise aio_pika.exceptions.AMQPConnectionError("broker connection lost")
        finally:
            self._ready.clear()
            self._connection = None
            with suppress_transient():
                await connection.close()

    # ----- applying batches

    async def _process(self, inbox: asyncio.Queue[AbstractIncomingMessage]) -> None:
        while not self._stopping:
            if self._lock_lost():
                # The session that held this consumer's lock is gone (a database restart): another process may be
                # applying these events now. Stop; the runner restarts the service, which takes the lock again.
                raise LeadershipLost(f"consumer {self.name!r} lost the database session holding its lock")
            try:
                first = await asyncio.wait_for(inbox.get(), timeout=0.5)
            except TimeoutError:
                continue
            batch = await self._fill_batch(first, inbox)
            entries = [self._decode(m) for m in batch]
            await self._apply_with_retry(entries)
            with suppress_transient():  # the checkpoint is committed: an ack lost with the channel changes nothing
                await batch[-1].ack(multiple=True)
            for e in entries:
                waiter = self._markers.get(e.marker) if e.marker else None
                if waiter is not None and not waiter.done():  # a drain that timed out has given up on it
                    waiter.set_result(None)

    async def _fill_batch(
        self, first: AbstractIncomingMessage, inbox: asyncio.Queue[AbstractIncomingMessage]
    ) -> list[AbstractIncomingMessage]:
        """Up to `batch_size` messages, waiting at most `linger_s` for more: fewer, fuller transactions."""
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger_s
        while len(batch) < self._batch_size:
            if not inbox.empty():
                batch.append(inbox.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(inbox.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _decode(self, message: AbstractIncomingMessage) -> _Entry:
        offset = stream_offset(message)
        marker = marker_of(message)
        if marker is not None:
            return _Entry(offset, marker, None, None, b"", None)
        try:
            event = decode_event(message.body, max_bytes=self._max_event_bytes)
        except Exception as e:  # whatever decoding raises, the message is set aside: a consumer never dies of input
            return _Entry(offset, None, None, describe(e), message.body, message.routing_key)
        refusal = publisher_refusal(event, message.user_id) if self._verify_publishers else None
        if refusal is not None:
            return _Entry(offset, None, None, refusal, message.body, message.routing_key)
        return _Entry(offset, None, event, None, message.body, message.routing_key)

    async def _apply_with_retry(self, entries: list[_Entry]) -> None:
        """Apply a batch: outages are waited out; a batch failing otherwise is re-run event by event in savepoints."""
        backoff = Backoff()
        isolate, attempts = False, 0
        while True:
            try:
                with self._metrics.batch_seconds.labels(self.name).time():
                    await self._apply(entries, isolate=isolate)
                return
            except Exception as e:  # the policy point: classify, then retry or isolate the bad event
                attempts += 1
                if self._lock_lost():
                    raise LeadershipLost(f"consumer {self.name!r} lost its lock while applying a batch") from e
                if after_failure(e, attempts) is Disposition.RETRY:
                    if self._stopping:
                        raise  # stopping or detached: the batch is read again (it was not acked or checkpointed)
                    self._metrics.retried.labels(self.name, e.__class__.__name__).inc()
                    log.warning("stream_batch_retry", consumer=self.name, error=describe(e), attempts=attempts)
                    await backoff.wait()
                    continue
                if isolate:
                    raise
                log.warning("stream_batch_isolating", consumer=self.name, error=describe(e))
                isolate = True

    async def _apply(self, entries: list[_Entry], *, isolate: bool) -> None:
        handled = [e for e in entries if e.event is not None and e.event.type in self._handlers]
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = {
                r["event_id"]
                for r in await conn.fetch(
                    "INSERT INTO handled_events (consumer, event_id) SELECT $1, unnest($2::uuid[])"
                    " ON CONFLICT DO NOTHING RETURNING event_id",
                    self.name,
                    [e.event.event_id for e in handled if e.event is not None],
                )
            }
            to_apply: list[tuple[_Entry, Event]] = []
            for entry in entries:
                if entry.error is not None:
                    await self._dead_letter(conn, entry, entry.error)
                    continue
                event = entry.event
                if event is None or event.type not in self._handlers:
                    continue
                if event.event_id not in fresh:
                    self._metrics.duplicates.labels(self.name).inc()
                    continue
                fresh.discard(event.event_id)
                to_apply.append((entry, event))
            if isolate:
                for entry, event in to_apply:
                    await self._apply_isolated(conn, entry, event)
            else:
                for event_type, run in itertools.groupby(to_apply, key=lambda pair: pair[1].type):
                    await self._apply_run(conn, event_type, [event for _, event in run])
            await conn.execute(
                'INSERT INTO stream_checkpoints (consumer, "offset") VALUES ($1, $2) ON CONFLICT (consumer)'
                ' DO UPDATE SET "offset" = GREATEST(stream_checkpoints."offset", EXCLUDED."offset"),'
                " updated_at = now()",
                self.name,
                entries[-1].offset,
            )
        self.applied += len(to_apply)
        self._metrics.stream_offset.labels(self.name).set(entries[-1].offset)

    async def _apply_run(self, conn: asyncpg.Connection, event_type: str, events: list[Event]) -> None:
        """Consecutive events of one type: one call for a Batched handler, else one call each."""
        handler = self._handlers[event_type]
        if isinstance(handler, Batched):
            await handler.apply(conn, events)
        else:
            for event in events:
                with structlog.contextvars.bound_contextvars(event_id=str(event.event_id)):
                    await handler(conn, event)
        self._metrics.handled.labels(self.name, event_type).inc(len(events))

    async def _apply_isolated(self, conn: asyncpg.Connection, entry: _Entry, event: Event) -> None:
        """One event in a savepoint: if it fails for good, it alone is set aside."""
        try:
            async with conn.transaction():
                await self._apply_run(conn, event.type, [event])
        except Exception as e:  # isolate mode: whatever this one event raised (but an outage), it alone is set aside
            if is_transient(e):
                raise
            await self._dead_letter(conn, entry, describe(e))

    async def _dead_letter(self, conn: asyncpg.Connection, entry: _Entry, reason: str) -> None:
        log.error("event_dead_lettered", consumer=self.name, offset=entry.offset, reason=reason)
        self._metrics.dead_lettered.labels(self.name, reason.split(":", 1)[0]).inc()
        await record_dead_letter(
            conn, self.name, entry.event.event_id if entry.event else None, entry.routing_key, reason, entry.body
        )


async def _until_any(task: asyncio.Task[None], *events: asyncio.Event) -> None:
    """Wait until `task` ends or any of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait([task, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
