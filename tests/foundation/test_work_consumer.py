"""Work-queue consumers: once in effect, ack after commit, dead letters with a reason, bounded retries."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aio_pika
import asyncpg
import pytest

from shared.bus import AlreadyHandled, BatchedWork, Once, Topology, WorkQueue, WorkQueueConsumer, publish_event
from shared.bus.acking import UNKNOWN_ATTEMPTS
from shared.bus.messages import REASON_HEADER
from shared.errors import DatabaseUnavailable, PermanentError
from shared.events import Event, decode_event
from shared.settings import Settings
from tests.conftest import wait_for
from tests.foundation.support import PROJECTION_DDL, minted, project_minted, snapshot

pytestmark = pytest.mark.usefixtures("drop_schemas")
QUEUE = WorkQueue("ingest", ("*.file.minted.#",), delivery_limit=3)


@pytest.fixture
async def work_topology(settings: Settings, amqp) -> AsyncIterator[Topology]:
    topo = Topology(prefix=settings.bus.prefix, stream_max_bytes=100 * 1024**2, stream_segment_bytes=10 * 1024**2,
                    work_queues=(QUEUE,))
    async with amqp.channel() as channel:
        await topo.declare(channel)
    yield topo
    async with amqp.channel() as channel:
        await topo.delete(channel)


@pytest.fixture
async def exchange(amqp, work_topology: Topology) -> AsyncIterator[aio_pika.abc.AbstractExchange]:
    channel = await amqp.channel()
    yield await channel.get_exchange(work_topology.events_exchange)
    await channel.close()


async def _dead_letters(amqp, topology: Topology) -> list[aio_pika.abc.AbstractIncomingMessage]:
    channel = await amqp.channel()
    queue = await channel.get_queue(topology.dead_letter_queue)
    found = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        found.append(message)
    await channel.close()
    return found


async def _run(consumer: WorkQueueConsumer) -> None:
    await consumer.start()
    try:
        await consumer.drain(timeout_s=30)
    finally:
        await consumer.stop()


def _consumer(pool, amqp, topology, metrics, handler, **options) -> WorkQueueConsumer:
    return WorkQueueConsumer("worker", QUEUE, pool, str(amqp.url), topology, handler, metrics,
                             **{"prefetch": 4, "retry_base_s": 0.01, "retry_cap_s": 0.05, **options})


async def _project(event: Event, once: Once) -> None:
    async with once.transaction() as conn:
        await project_minted(conn, event)


async def test_redelivered_event_changes_nothing(pool, amqp, work_topology, exchange, bus_metrics) -> None:
    await pool.execute(PROJECTION_DDL)
    events = [minted(i) for i in range(30)]
    for event in events + events[:10]:
        await publish_event(exchange, event)
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, _project))
    rows = await snapshot(pool)
    assert len(rows) == 30 and {r[3] for r in rows} == {1}
    assert bus_metrics.duplicates.labels("worker")._value.get() == 10


async def test_malformed_message_dead_lettered_with_reason_and_consumer_keeps_running(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    await exchange.publish(aio_pika.Message(b'{"type": "file.minted"}'), routing_key="karoo.file.minted.uvh5")
    await publish_event(exchange, minted(1))
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, _project))
    assert len(await snapshot(pool)) == 1
    dead = await _dead_letters(amqp, work_topology)
    assert len(dead) == 1
    assert dead[0].headers[REASON_HEADER] == "MalformedEvent: event lacks version, payload"
    assert dead[0].headers["x-obsflow-consumer"] == "worker"
    assert dead[0].routing_key == "karoo.file.minted.uvh5"


async def test_permanent_failure_dead_lettered_transient_failure_retried(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    refused, flaky = minted(1), minted(2)
    failures = {flaky.event_id: 2}

    async def handler(event: Event, once: Once) -> None:
        if event.event_id == refused.event_id:
            raise PermanentError("checksum does not match the announcement")
        if failures.get(event.event_id, 0) > 0:
            failures[event.event_id] -= 1
            raise DatabaseUnavailable("connection reset")
        await _project(event, once)

    for event in (refused, flaky, minted(3)):
        await publish_event(exchange, event)
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, handler))
    assert [r[0] for r in await snapshot(pool)] == [flaky.payload.name, minted(3).payload.name]  # type: ignore[attr-defined]
    dead = await _dead_letters(amqp, work_topology)
    assert [decode_event(m.body).event_id for m in dead] == [refused.event_id]
    assert dead[0].headers[REASON_HEADER] == "PermanentError: checksum does not match the announcement"
    assert bus_metrics.retried.labels("worker", "DatabaseUnavailable")._value.get() == 2


async def test_a_long_outage_is_waited_out_in_process_without_burning_the_delivery_limit(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    attempts = 0
    deliveries: list[int] = []

    async def down_for_a_while(event: Event, once: Once) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 4 * QUEUE.delivery_limit:  # far more failures than the queue would ever deliver it
            raise DatabaseUnavailable("still down")
        await _project(event, once)

    async def counting(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        deliveries.append(int((message.headers or {}).get("x-delivery-count", 0)))  # type: ignore[call-overload]
        await original(message)

    await publish_event(exchange, minted(1))
    consumer = _consumer(pool, amqp, work_topology, bus_metrics, down_for_a_while)
    original = consumer._on_message
    consumer._on_message = counting  # type: ignore[method-assign]
    await _run(consumer)
    assert len(await snapshot(pool)) == 1
    assert deliveries == [0]  # one delivery, kept through every attempt: the broker never counted a return
    assert await _dead_letters(amqp, work_topology) == []
    assert bus_metrics.retried.labels("worker", "DatabaseUnavailable")._value.get() == 4 * QUEUE.delivery_limit


async def test_unknown_error_gets_a_few_attempts_then_our_dead_letter_with_its_reason(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    attempts = 0

    async def buggy(event: Event, once: Once) -> None:
        nonlocal attempts
        attempts += 1
        raise KeyError("observation_id")

    event = minted(1)
    await publish_event(exchange, event)
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, buggy))
    assert attempts == UNKNOWN_ATTEMPTS
    dead = await _dead_letters(amqp, work_topology)
    assert len(dead) == 1 and dead[0].headers[REASON_HEADER] == "KeyError: 'observation_id'"
    row = await pool.fetchrow("SELECT consumer, event_id, reason, occurrences FROM dead_letters")
    assert dict(row) == {"consumer": "worker", "event_id": event.event_id, "reason": "KeyError: 'observation_id'",
                         "occurrences": 1}


async def test_stop_hands_back_unfinished_work(pool, amqp, work_topology, exchange, bus_metrics) -> None:
    await pool.execute(PROJECTION_DDL)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(event: Event, once: Once) -> None:
        started.set()
        await release.wait()
        await _project(event, once)

    await publish_event(exchange, minted(1))
    consumer = _consumer(pool, amqp, work_topology, bus_metrics, slow)
    await consumer.start()
    await asyncio.wait_for(started.wait(), 10)
    await consumer.stop(grace_s=0.2)  # the handler is still waiting: it is cancelled, the message not acked
    assert await snapshot(pool) == []
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, _project))
    assert len(await snapshot(pool)) == 1


async def test_record_in_a_shared_transaction_applies_each_event_once(pool) -> None:
    await pool.execute(PROJECTION_DDL)
    events = [minted(i) for i in range(5)]
    # Two handles of the same event ids (a redelivery) share transactions with other events: each applies once.
    async with pool.acquire() as conn, conn.transaction():
        for event in events[:3]:
            assert await Once(pool, "batcher", event).record(conn)
            await project_minted(conn, event)
    async with pool.acquire() as conn, conn.transaction():
        fresh = [event for event in events if await Once(pool, "batcher", event).record(conn)]
        for event in fresh:
            await project_minted(conn, event)
    assert fresh == events[3:]
    rows = await snapshot(pool)
    assert len(rows) == 5 and {r[3] for r in rows} == {1}
    assert await Once.done_among(pool, [Once(pool, "batcher", events[0])]) == [True]
    with pytest.raises(AlreadyHandled):
        async with Once(pool, "batcher", events[4]).transaction():
            pass


async def test_record_all_marks_duplicates_and_repeats_within_the_batch(pool) -> None:
    events = [minted(i) for i in range(4)]
    async with pool.acquire() as conn, conn.transaction():
        assert await Once(pool, "batcher", events[0]).record(conn)
    async with pool.acquire() as conn, conn.transaction():
        onces = [Once(pool, "batcher", e) for e in (events[0], events[1], events[2], events[1])]
        onces.append(Once(pool, "other-consumer", events[0]))
        assert await Once.record_all(conn, onces) == [False, True, True, False, True]
        assert await Once.record_all(conn, []) == []
    asked = [Once(pool, "batcher", e) for e in events] + [Once(pool, "other-consumer", events[1])]
    assert await Once.done_among(pool, asked) == [True, True, True, False, False]


class BatchedProjector:
    """A batched work handler written as a real one is: the batch's events recorded and applied in one transaction
    (`Once.record_all`), a duplicate answered with `once.duplicate()`; `failures` lists, per event id, the errors
    its next deliveries get instead. The first batch is held until `hold_first` returns (to let a burst gather)."""

    def __init__(
        self, pool: asyncpg.Pool, failures: dict[uuid.UUID, list[Exception]] | None = None,
        hold_first: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.batches: list[list[uuid.UUID]] = []
        self._pool = pool
        self._failures = failures or {}
        self._hold_first = hold_first

    def work(self, *, max_items: int = 8, concurrency: int = 1) -> BatchedWork:
        return BatchedWork(self.handle, max_items=max_items, concurrency=concurrency)

    async def handle(self, deliveries: Sequence[tuple[Event, Once]]) -> list[BaseException | None]:
        self.batches.append([event.event_id for event, _ in deliveries])
        if len(self.batches) == 1 and self._hold_first is not None:
            await self._hold_first()
        results: list[BaseException | None] = [
            failures.pop(0) if (failures := self._failures.get(event.event_id)) else None for event, _ in deliveries
        ]
        fine = [index for index, result in enumerate(results) if result is None]
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await Once.record_all(conn, [deliveries[index][1] for index in fine])
            for index, is_new in zip(fine, fresh, strict=True):
                if is_new:
                    await project_minted(conn, deliveries[index][0])
                else:
                    results[index] = deliveries[index][1].duplicate()
        return results

    def attempts(self, event: Event) -> int:
        """How many times `event` was handed to the handler."""
        return sum(batch.count(event.event_id) for batch in self.batches)

    def batch_of(self, event: Event) -> list[uuid.UUID]:
        """The (first) batch `event` came in."""
        return next(batch for batch in self.batches if event.event_id in batch)


async def _ready(amqp, topology: Topology) -> int:
    """Messages waiting in the work queue (not yet delivered to a consumer)."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(topology.queue_name(QUEUE.name), passive=True)
    count = int(queue.declaration_result.message_count or 0)
    await channel.close()
    return count


def _until_ready_is(amqp, topology: Topology, count: int) -> Callable[[], Awaitable[None]]:
    """Wait until the broker has delivered all but `count` messages (the rest of the prefetch is with us)."""

    async def hold() -> None:
        await wait_for(lambda: _ready_count_is(amqp, topology, count), timeout_s=10)

    return hold


async def _ready_count_is(amqp, topology: Topology, count: int) -> bool:
    return await _ready(amqp, topology) == count


async def _handled_ids(pool: asyncpg.Pool) -> list[uuid.UUID]:
    return [r["event_id"] for r in await pool.fetch("SELECT event_id FROM handled_events WHERE consumer = 'worker'")]


async def test_batched_handler_takes_a_burst_in_batches_and_applies_redeliveries_once(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    events = [minted(i) for i in range(24)]
    for event in events + events[:6]:
        await publish_event(exchange, event)
    projector = BatchedProjector(pool, hold_first=_until_ready_is(amqp, work_topology, 30 - 4))  # prefetch 4
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, projector.work(max_items=3)))

    sizes = [len(batch) for batch in projector.batches]
    assert 2 <= max(sizes) <= 3 and sum(sizes) == 30  # the first two batches share the 4 in flight
    rows = await snapshot(pool)
    assert len(rows) == 24 and {r[3] for r in rows} == {1}
    assert sorted(await _handled_ids(pool)) == sorted(e.event_id for e in events)
    assert bus_metrics.duplicates.labels("worker")._value.get() == 6
    assert bus_metrics.handled.labels("worker", "file.minted")._value.get() == 24
    assert await _ready(amqp, work_topology) == 0 and await _dead_letters(amqp, work_topology) == []


async def test_batched_permanent_error_dead_letters_that_event_only(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    events = [minted(i) for i in range(4)]
    refused = events[1]  # in the first batch or in the second: never alone (the second takes all the rest)
    projector = BatchedProjector(
        pool, {refused.event_id: [PermanentError("checksum does not match the announcement")]},
        hold_first=_until_ready_is(amqp, work_topology, 0),
    )
    for event in events:
        await publish_event(exchange, event)
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, projector.work()))

    assert len(projector.batch_of(refused)) > 1
    assert [projector.attempts(event) for event in events] == [1, 1, 1, 1]
    dead = await _dead_letters(amqp, work_topology)
    assert [decode_event(m.body).event_id for m in dead] == [refused.event_id]
    assert dead[0].headers[REASON_HEADER] == "PermanentError: checksum does not match the announcement"
    kept = [e for e in events if e is not refused]
    rows = await snapshot(pool)
    assert [r[0] for r in rows] == sorted(e.payload.name for e in kept)  # type: ignore[attr-defined]
    assert {r[3] for r in rows} == {1}
    assert sorted(await _handled_ids(pool)) == sorted(e.event_id for e in kept)
    assert await _ready(amqp, work_topology) == 0  # every delivery settled: nothing handed back on stop


async def test_batched_transient_error_retries_that_event_only(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    events = [minted(i) for i in range(4)]
    flaky = events[1]
    projector = BatchedProjector(
        pool, {flaky.event_id: [DatabaseUnavailable("connection reset")] * 2},
        hold_first=_until_ready_is(amqp, work_topology, 0),
    )
    for event in events:
        await publish_event(exchange, event)
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, projector.work()))

    assert len(projector.batch_of(flaky)) > 1
    assert [projector.attempts(event) for event in events] == [1, 3, 1, 1]
    assert bus_metrics.retried.labels("worker", "DatabaseUnavailable")._value.get() == 2
    rows = await snapshot(pool)
    assert len(rows) == 4 and {r[3] for r in rows} == {1}
    assert await _dead_letters(amqp, work_topology) == [] and await _ready(amqp, work_topology) == 0


async def test_batched_duplicate_in_a_burst_has_its_effect_once(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    lead, twice, last = minted(1), minted(2), minted(3)
    projector = BatchedProjector(pool, hold_first=_until_ready_is(amqp, work_topology, 0))
    for event in (lead, twice, twice, last):
        await publish_event(exchange, event)
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, projector.work()))

    assert projector.attempts(twice) == 2
    rows = await snapshot(pool)
    assert len(rows) == 3 and {r[3] for r in rows} == {1}
    assert sorted(await _handled_ids(pool)) == sorted(e.event_id for e in (lead, twice, last))
    assert bus_metrics.duplicates.labels("worker")._value.get() == 1
    assert bus_metrics.handled.labels("worker", "file.minted")._value.get() == 3
    assert await _dead_letters(amqp, work_topology) == [] and await _ready(amqp, work_topology) == 0


async def test_undecodable_messages_are_dead_lettered_at_once_and_never_block_the_queue(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    # 64 of these (the prefetch) once stopped ingestion: never acked, nacked or dead-lettered (issue 8, item 5).
    await pool.execute(PROJECTION_DDL)
    garbage = [b"[" * 100_000, b'{"version": ' + b"9" * 5000 + b"}", b"\xff\xfe", b"null", b'{"type": 7}',
               b'{"type": "file.minted", "version": true, "payload": {}}']
    for i in range(60):
        await exchange.publish(aio_pika.Message(garbage[i % len(garbage)] + b" " * (i // len(garbage))),
                               routing_key="karoo.file.minted.uvh5")
    await publish_event(exchange, minted(1))
    deliveries: list[int] = []
    consumer = _consumer(pool, amqp, work_topology, bus_metrics, _project)
    original = consumer._on_message

    async def counting(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        deliveries.append(int((message.headers or {}).get("x-delivery-count", 0)))  # type: ignore[call-overload]
        await original(message)

    consumer._on_message = counting  # type: ignore[method-assign]
    await _run(consumer)
    assert len(await snapshot(pool)) == 1
    assert len(deliveries) == 61 and set(deliveries) == {0}  # each delivered once: settled at the first delivery
    dead = await _dead_letters(amqp, work_topology)
    assert len(dead) == 60 and all(m.headers[REASON_HEADER].startswith("MalformedEvent: ") for m in dead)
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 60


async def test_a_16_mib_message_is_dead_lettered_once_with_a_bounded_excerpt(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    body = b'{"type": "observation.announced", "version": 1, "payload": {"path": "/' + b"p" * 16 * 1024**2 + b'"}}'
    for _ in range(2):
        await exchange.publish(aio_pika.Message(body), routing_key="karoo.file.minted.uvh5")
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, _project))
    row = await pool.fetchrow("SELECT reason, excerpt, body_bytes, body_sha256, occurrences FROM dead_letters")
    assert row["reason"] == f"MalformedEvent: the event is {len(body)} bytes; at most 1048576 are accepted"
    assert bytes(row["excerpt"]) == body[:4096] and row["body_bytes"] == len(body)
    assert bytes(row["body_sha256"]) == hashlib.sha256(body).digest() and row["occurrences"] == 2
    dead = await _dead_letters(amqp, work_topology)
    assert len(dead) == 2 and all(len(m.body) == 4096 for m in dead)  # the broker's copy is bounded too
    assert dead[0].headers["x-obsflow-body-bytes"] == len(body)
    assert dead[0].headers["x-obsflow-body-sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_batch_that_fails_as_a_whole_is_handled_again_one_by_one(
    pool, amqp, work_topology, exchange, bus_metrics
) -> None:
    # As ingest's pre-check did for a path component longer than NAME_MAX: os.stat raised for the whole batch.
    await pool.execute(PROJECTION_DDL)
    events = [minted(i) for i in range(4)]
    poison = events[2]
    projector = BatchedProjector(pool, hold_first=_until_ready_is(amqp, work_topology, 0))

    async def handle(deliveries: Sequence[tuple[Event, Once]]) -> list[BaseException | None]:
        if any(event.event_id == poison.event_id for event, _ in deliveries):
            raise OSError(36, "File name too long")
        return await projector.handle(deliveries)

    for event in events:
        await publish_event(exchange, event)
    await _run(_consumer(pool, amqp, work_topology, bus_metrics, BatchedWork(handle, max_items=8)))
    rows = await snapshot(pool)
    assert [r[0] for r in rows] == sorted(e.payload.name for e in events if e is not poison)  # type: ignore[attr-defined]
    dead = await _dead_letters(amqp, work_topology)
    assert [decode_event(m.body).event_id for m in dead] == [poison.event_id]
    assert dead[0].headers[REASON_HEADER] == "OSError: [Errno 36] File name too long"
