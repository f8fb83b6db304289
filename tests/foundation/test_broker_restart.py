"""RabbitMQ restarted while events are committed, published and consumed: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from shared.bus import OutboxRelay, StreamConsumer, append_events
from tests.conftest import wait_for
from tests.foundation.support import PROJECTION_DDL, minted, project_minted, snapshot
from tests.infra import LOCAL_AMQP, backends

pytestmark = pytest.mark.usefixtures("drop_schemas")


def _rabbitmqctl(*args: str) -> None:
    if os.environ.get("OBSFLOW_TEST_AMQP_URL") or backends().amqp_url != LOCAL_AMQP:
        pytest.fail("this test restarts the local RabbitMQ; it cannot restart a broker it was not given to run")
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.fail("rabbitmqctl is not on PATH: this test restarts the local broker (run `make services`)")
    subprocess.run([ctl, *args], check=True, capture_output=True, timeout=120)


async def test_broker_restart_loses_and_duplicates_nothing(pool, settings, topology, bus_metrics) -> None:
    await pool.execute(PROJECTION_DDL)
    import aio_pika

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
    await asyncio.to_thread(_rabbitmqctl, "stop_app")
    assert relay.published < len(events)  # the restart lands in the middle of the flow
    await asyncio.to_thread(_rabbitmqctl, "start_app")
    await asyncio.to_thread(_rabbitmqctl, "await_startup")
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
