"""Publishing without an outbox rides through a broker restart: every event arrives, by id, none is lost.

The broker restarted is the test session's private node (`tests/private_servers.py`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from pathlib import Path

import aio_pika
import pytest

from shared.bus import Topology, WorkQueue
from shared.bus.messages import MARKER_HEADER
from shared.bus.publisher import ConfirmedPublisher
from shared.errors import BrokerUnavailable
from shared.events import decode_event
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

    async with ConfirmedPublisher(private_rabbitmq.amqp_url, broker_topology) as publisher:
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


async def _log_ids(url: str, topology: Topology, expected: set[str], timeout_s: float = 30.0) -> set[str]:
    """The event ids in the log stream (markers left out), read from its start until `expected` are all there or
    `timeout_s` passes."""
    ids: set[str] = set()
    connection = await aio_pika.connect(url)
    async with connection, connection.channel() as channel:
        await channel.set_qos(prefetch_count=1000)
        stream = await channel.get_queue(topology.log_stream, ensure=False)

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if MARKER_HEADER not in (message.headers or {}):
                ids.add(str(message.message_id))
            await message.ack()

        await stream.consume(take, arguments={"x-stream-offset": "first"})
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: expected <= ids, timeout_s=timeout_s)
    return ids


async def test_events_confirmed_while_the_broker_boots_are_all_in_the_log(
    private_rabbitmq: PrivateRabbitMQ, broker_topology: Topology
) -> None:
    """For a moment after it starts, RabbitMQ 3.10 confirms events routed to the work queues and the log stream
    while the stream is not up: the stream never writes them. A publisher that reconnects at once (an instrument
    waiting out a restart) sends into that moment: nothing it sends before the log is up may be confirmed."""
    events = [minted(i) for i in range(4000)]
    for half in (events[:2000], events[2000:]):
        await asyncio.to_thread(private_rabbitmq.stop)
        publisher = ConfirmedPublisher(private_rabbitmq.amqp_url, broker_topology, reconnect_cap_s=0.05)
        publisher.start()
        for event in half:
            await publisher.publish(event)
        await asyncio.to_thread(private_rabbitmq.start)
        await publisher.close(timeout_s=120)

    expected = {str(e.event_id) for e in events}
    missing = expected - await _log_ids(private_rabbitmq.amqp_url, broker_topology, expected)
    assert not missing, f"{len(missing)} of {len(expected)} confirmed events are not in the log"
    work_queue = set(await _received_ids(private_rabbitmq.amqp_url, broker_topology.queue_name(QUEUE.name),
                                         len(expected)))
    assert work_queue == expected


async def test_close_says_how_many_events_were_left_unconfirmed(
    private_rabbitmq: PrivateRabbitMQ, broker_topology: Topology
) -> None:
    publisher = ConfirmedPublisher("amqp://guest:guest@127.0.0.1:1/", broker_topology)
    publisher.start()
    await publisher.publish(minted(1))
    with pytest.raises(BrokerUnavailable, match="1 events were not confirmed by the broker within 0.5 s"):
        await publisher.close(timeout_s=0.5)


def _announcer_from_the_docs() -> type:
    """The `Announcer` class docs/instruments.md tells instrument builders to copy, as written there."""
    text = (Path(__file__).parents[2] / "docs" / "instruments.md").read_text()
    block = text.split("<!-- instrument-announcer: begin -->")[1].split("<!-- instrument-announcer: end -->")[0]
    code = block.strip().removeprefix("```python").removesuffix("```")
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/instruments.md", "exec"), namespace)  # our own documentation, run as written
    return namespace["Announcer"]  # type: ignore[return-value]


async def test_the_announcer_in_the_instrument_docs_rides_through_a_broker_restart(
    private_rabbitmq: PrivateRabbitMQ, broker_topology: Topology, capsys
) -> None:
    announcer = _announcer_from_the_docs()(private_rabbitmq.amqp_url, broker_topology.prefix, site="karoo")
    ids = []
    restart: asyncio.Task[None] | None = None
    for i in range(200):
        ids.append(await announcer.announce(f"/data/correlator/zen.2459122.{30000 + i:05d}.sum.uvh5", "uvh5",
                                            expected_size=4096))
        if i == 60:
            restart = asyncio.create_task(asyncio.to_thread(private_rabbitmq.restart, 2.0))
        await asyncio.sleep(0.02)  # an instrument's pace, so the restart lands mid-flow
    assert restart is not None
    await restart
    await asyncio.wait_for(announcer.close(), 60)
    assert "broker unavailable" in capsys.readouterr().out  # it did ride through an outage

    received = await _received_ids(private_rabbitmq.amqp_url, broker_topology.queue_name(QUEUE.name), len(ids))
    assert set(received) == set(ids)
    connection = await aio_pika.connect(private_rabbitmq.amqp_url)
    async with connection, connection.channel() as channel:  # and what it sends is a valid obsflow event
        await channel.set_qos(prefetch_count=1)
        stream = await channel.get_queue(broker_topology.log_stream, ensure=False)
        first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            if not first.done() and MARKER_HEADER not in (message.headers or {}):  # its probes come first
                first.set_result(message.body)

        await stream.consume(take, arguments={"x-stream-offset": "first"})
        event = decode_event(await asyncio.wait_for(first, 30))
    assert str(event.event_id) in ids and event.routing_key == "karoo.observation.announced.uvh5"


async def test_the_broker_user_is_stamped_and_a_false_one_stops_the_publisher_with_a_reason(
    private_rabbitmq: PrivateRabbitMQ, broker_topology: Topology
) -> None:
    async with ConfirmedPublisher(private_rabbitmq.amqp_url, broker_topology,
                                  user_id="guest") as publisher:
        await publisher.publish(minted(1))
    connection = await aio_pika.connect(private_rabbitmq.amqp_url)
    async with connection, connection.channel() as channel:
        queue = await channel.get_queue(broker_topology.queue_name(QUEUE.name))
        message = await queue.get(no_ack=True, timeout=10)
        assert message.user_id == "guest"  # consumers can check who published (the broker vouches for it)

    impostor = ConfirmedPublisher(private_rabbitmq.amqp_url, broker_topology, user_id="karoo-ingest")
    impostor.start()
    await impostor.publish(minted(2))
    with pytest.raises(BrokerUnavailable, match="the publisher stopped: ChannelPreconditionFailed"):
        await impostor.close(timeout_s=30)  # the broker refuses a user id that is not the connection's: no retry
