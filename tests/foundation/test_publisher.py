"""Publishing without an outbox rides through a broker restart: every event arrives, by id, none is lost.

The broker restarted is the test session's private node (`tests/private_servers.py`).
"""

from __future__ import annotations

import asyncio
import collections

import aio_pika
import pytest

from shared.bus import Topology, WorkQueue
from shared.bus.publisher import ConfirmedPublisher
from shared.errors import BrokerUnavailable
from tests.conftest import wait_for
from tests.foundation.support import minted
from tests.private_servers import PrivateRabbitMQ

QUEUE = WorkQueue("catch", ("#",))


@pytest.fixture
async def broker_topology(private_rabbitmq: PrivateRabbitMQ, unique: str):
    topology = Topology(prefix=unique, stream_max_bytes=50 * 1024**2, stream_segment_bytes=5 * 1024**2,
                        work_queues=(QUEUE,))
    connection = await aio_pika.connect(private_rabbitmq.amqp_url)
    async with connection, connection.channel() as channel:
        await topology.declare(channel)
    yield topology
    connection = await aio_pika.connect(private_rabbitmq.amqp_url)
    async with connection, connection.channel() as channel:
        await topology.delete(channel)


async def _received_ids(url: str, queue: str, expected: int) -> list[str]:
    """Every message id in `queue` (acked as read), waiting until at least `expected` arrived."""
    ids: list[str] = []
    connection = await aio_pika.connect(url)
    async with connection, connection.channel() as channel:
        source = await channel.get_queue(queue)

        async def all_read() -> bool:
            while (message := await source.get(fail=False, no_ack=True)) is not None:
                ids.append(str(message.message_id))
            return len(set(ids)) >= expected

        await wait_for(all_read, timeout_s=60)
    return ids


async def test_every_event_arrives_once_by_id_through_a_broker_restart(
    private_rabbitmq: PrivateRabbitMQ, broker_topology: Topology
) -> None:
    events = [minted(i) for i in range(400)]
    restarted = asyncio.Event()

    async def restart_midway(publisher: ConfirmedPublisher) -> None:
        await wait_for(lambda: publisher.confirmed >= 100, timeout_s=30)
        await asyncio.to_thread(private_rabbitmq.restart, 2.0)
        restarted.set()

    async with ConfirmedPublisher(private_rabbitmq.amqp_url, broker_topology.events_exchange) as publisher:
        restart = asyncio.create_task(restart_midway(publisher))
        for event in events:
            await publisher.publish(event)
            await asyncio.sleep(0.02)  # an instrument's pace (50 events/s), so the restart lands mid-flow
        await restart
        await publisher.flush(timeout_s=60)
        assert publisher.reconnects >= 1 and publisher.unconfirmed == 0

    ids = await _received_ids(private_rabbitmq.amqp_url, broker_topology.queue_name(QUEUE.name), len(events))
    assert set(ids) == {str(e.event_id) for e in events}  # none lost, none invented
    repeats = [i for i, n in collections.Counter(ids).items() if n > 1]
    # A confirm lost with the connection is the only cause of a repeat (consumers deduplicate it by id).
    assert len(repeats) <= publisher._in_flight


async def test_close_says_how_many_events_were_left_unconfirmed(
    private_rabbitmq: PrivateRabbitMQ, broker_topology: Topology
) -> None:
    publisher = ConfirmedPublisher("amqp://guest:guest@127.0.0.1:1/", broker_topology.events_exchange)
    publisher.start()
    await publisher.publish(minted(1))
    with pytest.raises(BrokerUnavailable, match="1 events were not confirmed by the broker within 0.5 s"):
        await publisher.close(timeout_s=0.5)
