"""Stream consumers: batches applied once, checkpoints with the effect, rebuild by replay, bad input set aside."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence

import aio_pika
import asyncpg
import pytest

from shared.bus import Batched, OutboxRelay, StreamConsumer, Topology, append_events, publish_event
from shared.errors import PermanentError
from shared.events import Event
from shared.metrics import BusMetrics
from shared.settings import Settings
from tests.conftest import wait_for
from tests.foundation.support import (
    PROJECTION_DDL,
    RESET,
    minted,
    project_minted,
    project_minted_batched,
    snapshot,
)

pytestmark = pytest.mark.usefixtures("drop_schemas")


@pytest.fixture
async def exchange(amqp, topology: Topology) -> AsyncIterator[aio_pika.abc.AbstractExchange]:
    channel = await amqp.channel()
    yield await channel.get_exchange(topology.events_exchange)
    await channel.close()


async def _commit_through_outbox(pool: asyncpg.Pool, events: list[Event], per_tx: int = 100) -> None:
    for start in range(0, len(events), per_tx):
        async with pool.acquire() as conn, conn.transaction():
            await append_events(conn, events[start : start + per_tx])


class Running:
    """A consumer running in a task, stopped on exit."""

    def __init__(self, consumer: StreamConsumer) -> None:
        self.consumer = consumer
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamConsumer:
        self.task = asyncio.create_task(self.consumer.run(self.stop))
        await self.consumer.wait_ready()
        return self.consumer

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task


def _consumer(pool, settings: Settings, topology: Topology, metrics: BusMetrics, handlers=None) -> StreamConsumer:
    return StreamConsumer(
        "projector", pool, settings.amqp_url, topology, handlers or {"file.minted": project_minted}, metrics,
        batch_size=200,
    )


@pytest.mark.parametrize("handler", [project_minted, project_minted_batched], ids=["per-event", "batched"])
async def test_events_published_twice_are_applied_once(pool, settings, topology, amqp, exchange, bus_metrics, handler):
    await pool.execute(PROJECTION_DDL)
    events = [minted(i) for i in range(500)]
    await _commit_through_outbox(pool, events)
    await OutboxRelay(pool, settings.schema_for("test"), amqp, topology, bus_metrics).publish_pending()
    for event in events[:50]:  # the same events again, as a relay crash before its mark would re-send them
        await publish_event(exchange, event)

    async with Running(_consumer(pool, settings, topology, bus_metrics, {"file.minted": handler})) as consumer:
        await consumer.drain()
        assert consumer.applied == 500
    rows = await snapshot(pool)
    assert len(rows) == 500
    assert {applied for *_, applied in rows} == {1}
    assert bus_metrics.duplicates.labels("projector")._value.get() == 50


async def test_consumer_resumes_after_its_checkpoint(pool, settings, topology, exchange, bus_metrics) -> None:
    await pool.execute(PROJECTION_DDL)
    for i in range(100):
        await publish_event(exchange, minted(i))
    async with Running(_consumer(pool, settings, topology, bus_metrics)) as first:
        await first.drain()
    checkpoint = await pool.fetchval('SELECT "offset" FROM stream_checkpoints WHERE consumer = $1', "projector")
    for i in range(100, 150):
        await publish_event(exchange, minted(i))
    async with Running(_consumer(pool, settings, topology, bus_metrics)) as second:
        await second.drain()
        assert second.applied == 50
    assert await pool.fetchval('SELECT "offset" FROM stream_checkpoints') > checkpoint
    assert {r[3] for r in await snapshot(pool)} == {1}
    assert len(await snapshot(pool)) == 150


async def test_dropped_projection_rebuilt_by_replay_is_identical(pool, settings, topology, exchange, bus_metrics):
    await pool.execute(PROJECTION_DDL)
    for i in range(300):
        await publish_event(exchange, minted(i, site="karoo" if i % 2 else "nrao"))
    async with Running(_consumer(pool, settings, topology, bus_metrics)) as consumer:
        await consumer.drain()
    before = await snapshot(pool)

    applied = await _consumer(pool, settings, topology, bus_metrics).rebuild(["DROP TABLE minted", PROJECTION_DDL])
    assert applied == 300
    assert await snapshot(pool) == before


async def test_rebuild_refuses_while_the_consumer_runs(pool, settings, topology, bus_metrics) -> None:
    await pool.execute(PROJECTION_DDL)
    async with Running(_consumer(pool, settings, topology, bus_metrics)):
        with pytest.raises(Exception, match="running elsewhere; stop that service first"):
            await _consumer(pool, settings, topology, bus_metrics).rebuild(RESET)


async def test_malformed_and_failing_events_are_set_aside_and_the_rest_applied(
    pool, settings, topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    poison = minted(7)

    async def project_or_refuse(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        if any(event.event_id == poison.event_id for event in events):
            raise PermanentError("this file's metadata contradicts the catalogue")
        await project_minted_batched.apply(conn, events)

    await exchange.publish(aio_pika.Message(b"{not json"), routing_key="karoo.file.minted.uvh5")
    for i in range(20):
        await publish_event(exchange, poison if i == 7 else minted(i))
    consumer = _consumer(pool, settings, topology, bus_metrics, {"file.minted": Batched(project_or_refuse)})
    async with Running(consumer):
        await consumer.drain()
    assert len(await snapshot(pool)) == 19
    reasons = [r["reason"] for r in await pool.fetch("SELECT reason FROM dead_letters ORDER BY id")]
    assert reasons[0].startswith("MalformedEvent: the event is not valid JSON")
    assert reasons[1] == "PermanentError: this file's metadata contradicts the catalogue"
    assert len(reasons) == 2


async def test_a_consumer_whose_lock_session_dies_stops_applying_and_takes_the_lock_again(
    pool, settings, topology, exchange, bus_metrics
):
    await pool.execute(PROJECTION_DDL)
    consumer = _consumer(pool, settings, topology, bus_metrics)
    async with Running(consumer) as running:
        await publish_event(exchange, minted(1))
        await running.drain()
        # Another process queues for the lock, then the database ends the session that holds it (as a restart
        # would): the other process leads now, and this one must stop applying rather than run beside it.
        other = await asyncpg.connect(settings.database_url)
        try:
            taking = asyncio.create_task(other.execute("SELECT pg_advisory_lock($1)", consumer._lock_key()))
            await wait_for(lambda: _lock_waiters(pool, consumer._lock_key()), timeout_s=10)
            await pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid <> pg_backend_pid()"
                " AND objid = ($1::bigint & 4294967295)::oid AND classid = (($1::bigint >> 32) & 4294967295)::oid",
                consumer._lock_key(),
            )
            await taking
            await wait_for(lambda: consumer.standby, timeout_s=10)
            assert not consumer.attached
            await publish_event(exchange, minted(2))
            with pytest.raises(TimeoutError):
                await running.drain(timeout_s=1.0)  # standing by: it applies nothing while the other leads
            await other.execute("SELECT pg_advisory_unlock($1)", consumer._lock_key())
        finally:
            await other.close()
        await running.drain(timeout_s=30)  # it took the lock again and resumed from its checkpoint
        assert running.attached and not running.standby
    rows = await snapshot(pool)
    assert len(rows) == 2 and {r[3] for r in rows} == {1}


async def _lock_waiters(pool: asyncpg.Pool, key: int) -> bool:
    return bool(await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND objid = ($1::bigint & 4294967295)::oid AND classid = (($1::bigint >> 32) & 4294967295)::oid", key,
    ))


HOSTILE = [
    b"[" * 100_000,  # RecursionError in json.loads: every stream consumer crash-looped on it (issue 8, item 4)
    b'{"type": "file.minted", "version": 1, "payload": {"size": ' + b"9" * 5000 + b"}}",  # ValueError in json.loads
    b'{"type": "file.minted", "version": true, "payload": {}}',
    b"\xff" * 64,
    b'{"type": "file.minted", "version": 1, "payload": {"name": "' + b"x" * (16 * 1024**2) + b'"}}',  # 16 MiB
]


async def test_hostile_messages_on_the_log_are_set_aside_once_and_bounded_and_later_events_applied(
    pool, settings, topology, exchange, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    await publish_event(exchange, minted(0))
    for body in HOSTILE:
        await exchange.publish(aio_pika.Message(body), routing_key="karoo.file.minted.uvh5")
    await exchange.publish(aio_pika.Message(HOSTILE[-1]), routing_key="karoo.file.minted.uvh5")  # the same again
    await publish_event(exchange, minted(1))
    async with Running(_consumer(pool, settings, topology, bus_metrics)) as consumer:
        await consumer.drain()
        assert consumer.attached  # it never died of its input
    assert len(await snapshot(pool)) == 2
    rows = await pool.fetch(
        "SELECT reason, length(excerpt) AS kept, body_bytes, body_sha256, occurrences FROM dead_letters ORDER BY id"
    )
    assert [r["reason"].split(":")[0] for r in rows] == ["MalformedEvent"] * len(HOSTILE)
    assert "nested" in rows[0]["reason"] or "not valid JSON" in rows[0]["reason"]
    big = rows[-1]
    assert "at most 1048576" in big["reason"]
    assert (big["kept"], big["body_bytes"], big["occurrences"]) == (4096, len(HOSTILE[-1]), 2)  # stored once
    assert bytes(big["body_sha256"]) == hashlib.sha256(HOSTILE[-1]).digest()
