"""RabbitMQ restarted while events are committed, published and consumed: nothing lost, nothing doubled.

The broker restarted is a private node of the test session's own (`tests/private_servers.py`), never the machine's.
A whole node restart, not only its application: for a moment after it, the broker confirms messages it has no route
for yet and drops them, which is why the relay publishes them mandatory (this test lost 300-900 events without).
"""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from shared.bus import OutboxRelay, StreamConsumer, append_events
from shared.settings import Settings
from tests.conftest import wait_for
from tests.foundation.support import PROJECTION_DDL, minted, project_minted, snapshot
from tests.private_servers import PrivateRabbitMQ

pytestmark = pytest.mark.usefixtures("drop_schemas")


@pytest.fixture
def settings(settings: Settings, private_rabbitmq: PrivateRabbitMQ) -> Settings:
    """The test site on the private broker (the database is the shared one: only the broker restarts here)."""
    return settings.model_copy(update={"amqp_url": private_rabbitmq.amqp_url})


async def test_broker_restart_loses_and_duplicates_nothing(
    pool, settings, topology, bus_metrics, private_rabbitmq: PrivateRabbitMQ
) -> None:
    await pool.execute(PROJECTION_DDL)
    amqp = await aio_pika.connect_robust(settings.amqp_url, reconnect_interval=0.5)
    relay = OutboxRelay(pool, settings.schema_for("test"), amqp, topology, bus_metrics, poll_interval_s=0.2)
    consumer = StreamConsumer("projector", pool, settings.amqp_url, topology, {"file.minted": project_minted},
                              bus_metrics, batch_size=100)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    events = [minted(i) for i in range(3000)]

    broker_back = asyncio.Event()

    async def produce() -> None:
        for start in range(0, len(events), 50):
            async with pool.acquire() as conn, conn.transaction():
                await append_events(conn, events[start : start + 50])
            if start == 1500:  # half the events are committed while the broker is down
                await broker_back.wait()

    producer = asyncio.create_task(produce())
    await wait_for(lambda: relay.published > 500, timeout_s=30)
    await asyncio.to_thread(private_rabbitmq.stop)
    assert relay.published < len(events)  # the restart lands in the middle of the flow
    await asyncio.to_thread(private_rabbitmq.start)
    broker_back.set()
    await producer
    await wait_for(lambda: _all_published(pool), timeout_s=60)
    await consumer.drain(timeout_s=60)
    stop.set()
    await asyncio.gather(*tasks)
    await amqp.close()

    rows = await snapshot(pool)
    assert len(rows) == 3000
    assert {r[3] for r in rows} == {1}
    assert [r[0] for r in rows] == sorted(e.payload.name for e in events)  # type: ignore[attr-defined]


async def _all_published(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
