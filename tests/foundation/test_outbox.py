"""The outbox: no event without its change, no change without its event, order kept, relay catches up."""

from __future__ import annotations

import asyncio

import aio_pika
import asyncpg
import pytest

from shared.bus import OutboxRelay, Topology, append_events
from shared.events import decode_event
from tests.conftest import wait_for
from tests.foundation.support import PROJECTION_DDL, minted

pytestmark = pytest.mark.usefixtures("drop_schemas")


async def _collect(amqp: aio_pika.abc.AbstractRobustConnection, topology: Topology, pattern: str = "#"):
    """A private queue bound to the events exchange, and the list it fills."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(topology.events_exchange, routing_key=pattern)
    received: list[object] = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        received.append(decode_event(message.body))
        await message.ack()

    await queue.consume(on_message)
    return received


async def test_rolled_back_transaction_leaves_no_event(
    pool: asyncpg.Pool, amqp, topology: Topology, settings, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    received = await _collect(amqp, topology)
    with pytest.raises(RuntimeError, match="after the write"):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO minted (name, size, checksum) VALUES ('a', 1, 'x')")
            await append_events(conn, [minted(1)])
            raise RuntimeError("failure after the write")
    good = minted(2)
    async with pool.acquire() as conn, conn.transaction():
        await append_events(conn, [good])

    relay = OutboxRelay(pool, settings.schema_for("test"), amqp, topology, bus_metrics)
    assert await relay.publish_pending() == 1
    await wait_for(lambda: len(received) >= 1)
    assert [e.event_id for e in received] == [good.event_id]  # type: ignore[attr-defined]
    assert await pool.fetchval("SELECT count(*) FROM minted") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_relay_started_after_commits_publishes_everything_in_order(
    pool: asyncpg.Pool, amqp, topology: Topology, settings, bus_metrics
) -> None:
    received = await _collect(amqp, topology)
    events = [minted(i) for i in range(1200)]
    for start in range(0, len(events), 100):  # committed while no relay runs
        async with pool.acquire() as conn, conn.transaction():
            await append_events(conn, events[start : start + 100])

    relay = OutboxRelay(pool, settings.schema_for("test"), amqp, topology, bus_metrics, batch_size=500)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await wait_for(lambda: len(received) >= 1200)
    # A commit made while the relay waits is published promptly (NOTIFY), not at the next poll.
    late = minted(5000)
    async with pool.acquire() as conn, conn.transaction():
        await append_events(conn, [late])
    await wait_for(lambda: len(received) >= 1201, timeout_s=1.5)
    stop.set()
    await task
    assert [e.event_id for e in received] == [e.event_id for e in [*events, late]]  # type: ignore[attr-defined]
