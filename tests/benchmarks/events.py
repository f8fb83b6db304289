"""Benchmark: events through the outbox, the broker and a stream consumer into a table, end to end.

Measured in the same run: the raw ceiling (aio-pika publishing the same payloads with confirms in flight to the
same kind of topology, a consumer acking them off the stream, no database) and the replay rate from the start
of the stream. The last line printed is one JSON object. `--quick` runs a smaller version in under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import aio_pika
import asyncpg
from prometheus_client import CollectorRegistry

from shared.bus import OutboxRelay, StreamConsumer, Topology, append_events
from shared.bus.messages import event_message
from shared.db import apply_migrations, create_pool
from shared.events import encode_event
from shared.metrics import BusMetrics
from tests.foundation.support import PROJECTION_DDL, minted, project_minted_batched
from tests.infra import backends

DSN = backends().database_url
AMQP = backends().amqp_url


async def end_to_end(n: int, prefix: str, pool: asyncpg.Pool, schema: str) -> tuple[float, StreamConsumer]:
    """Seconds from the first outbox write to the last event projected."""
    topology = Topology(prefix=prefix)
    amqp = await aio_pika.connect_robust(AMQP)
    async with amqp.channel() as channel:
        await topology.declare(channel)
    metrics = BusMetrics(CollectorRegistry())
    relay = OutboxRelay(pool, schema, amqp, topology, metrics, batch_size=2000, poll_interval_s=0.5)
    consumer = StreamConsumer("projector", pool, AMQP, topology, {"file.minted": project_minted_batched}, metrics,
                              batch_size=1000)
    events = [minted(i) for i in range(n)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    await consumer.wait_ready()
    started = time.perf_counter()
    for start in range(0, n, 500):  # a service commits its state changes with their events, 500 per transaction
        async with pool.acquire() as conn, conn.transaction():
            await append_events(conn, events[start : start + 500])
    await relay_caught_up(relay, n)
    await consumer.drain(timeout_s=600)
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*tasks)
    await amqp.close()
    return elapsed, consumer


async def relay_caught_up(relay: OutboxRelay, n: int, poll_s: float = 0.01) -> None:
    """Wait until the relay has had all n events confirmed by the broker."""
    async with asyncio.timeout(600):
        while relay.published < n:  # noqa: ASYNC110 (a counter in another task, polled)
            await asyncio.sleep(poll_s)


async def raw_ceiling(n: int, prefix: str) -> float:
    """Seconds for aio-pika alone to publish n of the same payloads (confirms in flight) and consume them."""
    topology = Topology(prefix=prefix)
    connection = await aio_pika.connect(AMQP)
    bodies = [encode_event(minted(i)) for i in range(n)]
    async with connection:
        channel = await connection.channel()
        await topology.declare(channel)
        exchange = await channel.get_exchange(topology.events_exchange)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=2000)
        stream = await consume_channel.get_queue(topology.log_stream, ensure=False)
        received = 0
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            received += 1
            if received % 500 == 0 or received == n:
                await message.ack(multiple=True)
            if received == n:
                done.set()

        await stream.consume(on_message, arguments={"x-stream-offset": "next"})
        started = time.perf_counter()
        for start in range(0, n, 2000):
            await asyncio.gather(*(
                exchange.publish(event_message(str(uuid.uuid4()), "file.minted", body),
                                 routing_key="karoo.file.minted.uvh5", mandatory=False)
                for body in bodies[start : start + 2000]
            ))
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.perf_counter() - started
        await topology.delete(channel)
    return elapsed


async def main(n: int) -> dict[str, float | int]:
    run = uuid.uuid4().hex[:8]
    prefix, schema = f"bench{run}", f"bench{run}_events"
    pool = await create_pool(DSN, schema, max_size=8)
    try:
        await apply_migrations(pool, schema, ["shared.bus.migrations"])
        await pool.execute(PROJECTION_DDL)
        raw_s = await raw_ceiling(n, f"raw{run}")
        e2e_s, consumer = await end_to_end(n, prefix, pool, schema)
        rows, applied = await pool.fetchrow("SELECT count(*), coalesce(sum(applied), 0) FROM minted")
        started = time.perf_counter()
        replayed = await consumer.rebuild(["TRUNCATE minted"])
        replay_s = time.perf_counter() - started
        replay_rows, replay_applied = await pool.fetchrow("SELECT count(*), coalesce(sum(applied), 0) FROM minted")
    finally:
        amqp = await aio_pika.connect(AMQP)
        async with amqp, amqp.channel() as channel:
            await Topology(prefix=prefix).delete(channel)
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()
    return {
        "events": n,
        "events_per_s": round(n / e2e_s),
        "raw_events_per_s": round(n / raw_s),
        "ratio": round(raw_s / e2e_s, 3),
        "replay_events_per_s": round(replayed / replay_s),
        "lost": n - rows,
        "duplicated": applied - rows,
        "replay_lost": n - replay_rows,
        "replay_duplicated": replay_applied - replay_rows,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 events instead of 100,000")
    parser.add_argument("--events", type=int, default=None)
    args = parser.parse_args()
    count = args.events or (20_000 if args.quick else 100_000)
    print(json.dumps(asyncio.run(main(count))))
