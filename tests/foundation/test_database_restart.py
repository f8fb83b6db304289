"""PostgreSQL restarted under running consumers and loops: they wait it out and carry on; nothing dead-lettered.

The database restarted is the test session's private cluster (`tests/private_servers.py`), never the machine's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from services.monitor.metrics import REFRESH_S
from services.monitor.service import SPEC as MONITOR
from shared.bus import Once, Topology, WorkQueue, WorkQueueConsumer, publish_event
from shared.events import Event
from shared.locks import lock_key
from shared.runner import ServiceRunner
from shared.settings import Settings
from tests.conftest import wait_for
from tests.foundation.support import PROJECTION_DDL, minted, project_minted, snapshot
from tests.private_servers import PrivatePostgres

pytestmark = pytest.mark.usefixtures("drop_schemas")
QUEUE = WorkQueue("projector", ("*.file.minted.#",))


@pytest.fixture
def settings(settings: Settings, private_postgres: PrivatePostgres) -> Settings:
    """The test site on a database this test may restart (the broker is the shared one)."""
    return settings.model_copy(update={"database_url": private_postgres.database_url})


async def test_the_monitor_rides_through_a_database_restart(settings, amqp, private_postgres) -> None:
    # Its tally refresh loop died on the first failed query and took the monitor down with it.
    runner = ServiceRunner(MONITOR, settings, http=False)
    ctx = await runner.start()
    try:
        exchange = await (await amqp.channel()).get_exchange(ctx.topology.events_exchange)
        for i in range(10):
            await publish_event(exchange, minted(i))
        await wait_for(lambda: _tally(runner) == 10, timeout_s=30)
        # Down longer than the refresh period: the refresh fails at least once while it is.
        await asyncio.to_thread(private_postgres.restart, REFRESH_S + 1.0)
        for i in range(10, 25):
            await publish_event(exchange, minted(i))
        await wait_for(lambda: _tally(runner) == 25, timeout_s=60)  # applied once each, and figures refreshed
        assert not runner.failed and all(not task.done() for task in runner._tasks)
    finally:
        await runner.stop()
        async with amqp.channel() as channel:
            await ctx.topology.delete(channel)


def _tally(runner: ServiceRunner) -> float | None:
    assert runner.ctx is not None
    return runner.ctx.metrics.registry.get_sample_value(
        "obsflow_site_events_total", {"site": "karoo", "type": "file.minted"}
    )


@pytest.fixture
async def work_topology(settings: Settings, amqp) -> AsyncIterator[Topology]:
    topology = Topology(prefix=settings.bus.prefix, stream_max_bytes=50 * 1024**2,
                        stream_segment_bytes=5 * 1024**2, work_queues=(QUEUE,))
    async with amqp.channel() as channel:
        await topology.declare(channel)
    yield topology
    async with amqp.channel() as channel:
        await topology.delete(channel)


async def test_a_work_consumer_waits_out_a_database_outage_without_dead_letters(
    pool, settings, amqp, work_topology, bus_metrics, private_postgres
) -> None:
    await pool.execute(PROJECTION_DDL)
    deliveries: list[int] = []

    async def project(event: Event, once: Once) -> None:
        async with once.transaction() as conn:
            await project_minted(conn, event)

    consumer = WorkQueueConsumer("projector", QUEUE, pool, settings.amqp_url, work_topology, project, bus_metrics,
                                 prefetch=8, retry_base_s=0.05, retry_cap_s=0.5)
    original = consumer._on_message

    async def counting(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        deliveries.append(int((message.headers or {}).get("x-delivery-count", 0)))  # type: ignore[call-overload]
        await original(message)

    consumer._on_message = counting  # type: ignore[method-assign]
    await consumer.start()
    try:
        await asyncio.to_thread(private_postgres.stop)
        async with amqp.channel() as channel:
            exchange = await channel.get_exchange(work_topology.events_exchange)
            for i in range(20):
                await publish_event(exchange, minted(i))
        await wait_for(lambda: bus_metrics.retried.labels("projector", "ConnectionRefusedError")._value.get() > 20,
                       timeout_s=30)  # every delivery in flight is failing against the database, and kept
        await asyncio.sleep(3.0)  # the outage lasts
        await asyncio.to_thread(private_postgres.start)
        await consumer.drain(timeout_s=60)
    finally:
        await consumer.stop()
    rows = await snapshot(pool)
    assert len(rows) == 20 and {r[3] for r in rows} == {1}
    assert sorted(deliveries) == [0] * 20  # each delivered once: the broker never saw a failure
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_the_schedulers_dispatcher_leads_again_after_a_database_restart(settings, amqp, private_postgres) -> None:
    # Found by `make chaos`: a database restart ended the session holding the dispatcher's lock, and the dispatcher
    # went on without it (another replica could lead too) or, restarted while the database was shutting down, died
    # and took the scheduler down with it.
    from services.scheduler.service import SPEC as SCHEDULER

    scheduler = {"poll_interval_s": 0.2, "backend_options": {"local": {"allow_root": True}}}
    settings = settings.model_copy(update={"services": {"scheduler": scheduler}})
    key = lock_key("dispatch", settings.schema_for("scheduler"))
    runner = ServiceRunner(SCHEDULER, settings, http=False)
    ctx = await runner.start()
    try:
        for mode in ("immediate", "fast"):
            await wait_for(lambda: _held_elsewhere(private_postgres, key), timeout_s=60)
            await asyncio.to_thread(private_postgres.restart, 1.0, mode)
            await wait_for(lambda: _held_elsewhere(private_postgres, key), timeout_s=60)  # led again, by it
        assert not runner.failed and all(not task.done() for task in runner._tasks)
    finally:
        await runner.stop()
        async with amqp.channel() as channel:
            await ctx.topology.delete(channel)


async def _held_elsewhere(database: PrivatePostgres, key: int) -> bool:
    """Whether another session holds the advisory lock `key` (taking it here means nobody did: given back)."""
    try:
        conn = await asyncpg.connect(database.database_url, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False  # not back yet
    try:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
            return False
        return True
    finally:
        await conn.close()
