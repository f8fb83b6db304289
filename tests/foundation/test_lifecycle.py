"""A service's lifecycle: work consumers stop in parallel within one grace, then the shutdown hooks run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest

from shared.bus import Once, Topology, WorkQueue, publish_event
from shared.events import Event
from shared.runner import ServiceRunner
from shared.service import ServiceContext, ServiceParts, ServiceSpec
from shared.settings import Settings
from tests.conftest import wait_for
from tests.foundation.support import minted

pytestmark = pytest.mark.usefixtures("drop_schemas")

QUEUES = (WorkQueue("first", ("*.file.minted.#",)), WorkQueue("second", ("*.file.minted.#",)))
GRACE_S = 2.0


class Stuck:
    """A work handler that never finishes: it records that it started and waits until cancelled."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled = 0

    async def __call__(self, event: Event, once: Once) -> None:
        self.started.append(str(event.event_id))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def _spec(handler: Stuck, stopped: list[str]) -> ServiceSpec:
    async def build(ctx: ServiceContext) -> ServiceParts:
        parts = ServiceParts(work_consumers=[ctx.work_consumer(queue, handler, prefetch=1) for queue in QUEUES])

        async def first_hook() -> None:
            stopped.append(f"first hook, consumers attached: {[c.attached for c in parts.work_consumers]}")

        async def failing_hook() -> None:
            stopped.append("failing hook")
            raise RuntimeError("a part could not release what it held")

        async def last_hook() -> None:
            stopped.append("last hook")

        for hook in (first_hook, failing_hook, last_hook):
            parts.at_stop(hook)
        return parts

    return ServiceSpec(name="lifecycle", build=build, work_queues=QUEUES)


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[tuple[ServiceRunner, Stuck, list[str]]]:
    handler, stopped = Stuck(), []
    runner = ServiceRunner(_spec(handler, stopped), settings.model_copy(update={"shutdown_grace_s": GRACE_S}),
                           http=False)
    await runner.start()
    yield runner, handler, stopped
    if runner.ctx is not None and not runner.ctx.pool.is_closing():
        await runner.stop()
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection, connection.channel() as channel:
        await Topology.from_settings(settings.bus, QUEUES).delete(channel)


async def test_work_consumers_stop_in_parallel_within_one_grace_then_hooks_run_last_first(runner) -> None:
    service, handler, stopped = runner
    assert all(c.attached for c in service.parts.work_consumers)
    ctx = service.ctx
    channel = await ctx.amqp.channel()
    exchange = await channel.get_exchange(ctx.topology.events_exchange)
    await publish_event(exchange, minted(1))  # one delivery to each queue: both consumers get stuck on it
    await channel.close()
    await wait_for(lambda: len(handler.started) == 2, timeout_s=10)

    began = time.monotonic()
    await service.stop()
    took = time.monotonic() - began
    # One after another, each with the whole grace, took 2 x GRACE_S; in parallel it is one grace.
    assert took < 1.5 * GRACE_S, took
    assert handler.cancelled == 2  # in flight past the grace: cancelled, never acked (redelivered elsewhere)
    assert stopped == ["last hook", "failing hook", "first hook, consumers attached: [False, False]"]
    assert service.failed  # the failing hook is reported (and the process exits non-zero), the rest still ran
    assert ctx.pool.is_closing()
