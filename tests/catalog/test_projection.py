"""The catalog's projection: two nights of files grouped into sessions, closed once, replayed identically."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from services.catalog.options import catalog_options
from services.catalog.service import SPEC
from services.catalog.session_closing import SessionAlreadyClosed, close_quiet_sessions, close_session
from services.catalog.sessions import session_id_for
from shared.runner import ServiceRunner
from shared.service import ServiceContext
from tests.catalog.catalog_harness import (
    JD_STEP,
    NIGHT_1,
    NIGHT_2,
    catalog_settings,
    delete_topology,
    dump_tables,
    instance_created,
    instance_deleted,
    minted,
    night,
    publish,
    running_catalog,
)

pytestmark = pytest.mark.usefixtures("drop_schemas")


@pytest.fixture
async def closed_events(settings, amqp) -> AsyncIterator[asyncio.Queue[dict]]:
    """Every session.closed the site publishes, as decoded JSON (the topology is declared by the service)."""
    received: asyncio.Queue[dict] = asyncio.Queue()
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(f"{settings.bus.prefix}.events", aio_pika.ExchangeType.TOPIC,
                                              durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="*.session.closed")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await received.put(json.loads(message.body))

    await queue.consume(on_message)
    yield received
    await channel.close()


async def test_two_nights_grouped_closed_once_and_replayed_identically(settings, amqp, closed_events) -> None:
    settings = catalog_settings(settings, session_sweep_interval_s=3600)
    times = night(NIGHT_1, 100) + night(NIGHT_2, 100)
    events = [minted(jd) for jd in times]
    random.Random(7).shuffle(events)  # arrival order does not matter
    first = events[0].payload.name  # type: ignore[attr-defined]
    overtaken = instance_created(first, "nrao", "gone")  # verified, then deleted; the deletion arrives first
    copies = [instance_created(first, "karoo", "a"), instance_created(first, "nrao", "b"),
              instance_deleted(first, "nrao", "gone"), overtaken]
    try:
        async with running_catalog(settings, http=False) as runner:
            ctx, consumer = _ctx(runner), runner.parts.stream_consumers[0]
            await publish(amqp, settings, events + copies)
            await consumer.drain()
            assert await ctx.pool.fetchval("SELECT count(*) FROM files") == 200
            assert await ctx.pool.fetchval("SELECT count(*) FROM observations WHERE session_id IS NOT NULL") == 200
            # An instance.deleted that overtook its instance.created keeps the copy away.
            sites = await ctx.pool.fetch("SELECT site, path FROM instances ORDER BY site")
            assert [tuple(r) for r in sites] == [("karoo", "a"), ("nrao", "b")]
            sessions = [tuple(r) for r in await ctx.pool.fetch(
                "SELECT session_id, start_jd, end_jd, n_observations, closed_at FROM sessions ORDER BY start_jd")]
            assert sessions == [
                (session_id_for(NIGHT_1), NIGHT_1, pytest.approx(NIGHT_1 + 99 * JD_STEP), 100, None),
                (session_id_for(NIGHT_2), NIGHT_2, pytest.approx(NIGHT_2 + 99 * JD_STEP), 100, None),
            ]

            before = await dump_tables(ctx.pool)
            duplicate = minted(NIGHT_1)  # same content under a new id, and the very same event again
            await publish(amqp, settings, [events[0], events[5], copies[1]])
            await consumer.drain()
            assert await dump_tables(ctx.pool) == before
            await publish(amqp, settings, [duplicate])
            await consumer.drain()
            assert await dump_tables(ctx.pool) == before

            await _close_both_nights_once(ctx, consumer, closed_events, times)
            # A straggler of night 1 after its close starts a late session: the closed one never changes.
            await publish(amqp, settings, [minted(NIGHT_1 + 50.5 * JD_STEP)])
            await consumer.drain()
            late = await ctx.pool.fetchrow("SELECT * FROM sessions WHERE closed_at IS NULL")
            assert late["n_observations"] == 1 and late["start_jd"] == pytest.approx(NIGHT_1 + 50.5 * JD_STEP)
            live = await dump_tables(ctx.pool)
            outbox = await ctx.pool.fetchval("SELECT count(*) FROM outbox")

        replay = ServiceRunner(SPEC, settings, http=False)
        try:
            ctx = await replay.prepare()
            applied = await replay.parts.stream_consumers[0].rebuild(replay.parts.reset_projection, timeout_s=60)
            assert applied >= len(events) + len(copies) + 2 + 1  # + 2 closures, 1 late (+ duplicates)
            assert await dump_tables(ctx.pool) == live
            assert await ctx.pool.fetchval("SELECT count(*) FROM outbox") == outbox  # a replay emits nothing
        finally:
            await replay.stop()
    finally:
        await delete_topology(settings)


async def _close_both_nights_once(ctx, consumer, closed_events, times) -> None:
    policy = catalog_options(ctx.settings.service_options("catalog")).policy
    assert await close_quiet_sessions(ctx, policy) == []  # nothing is quiet yet on the wall clock
    later = datetime.now(UTC) + timedelta(seconds=policy.quiet_period_s + 1)
    closed = await close_quiet_sessions(ctx, policy, now=later)
    assert [e.payload.session_id for e in closed] == [session_id_for(NIGHT_1), session_id_for(NIGHT_2)]
    got = [await asyncio.wait_for(closed_events.get(), 20) for _ in range(2)]
    by_session = {e["payload"]["session_id"]: e["payload"] for e in got}
    first_night = by_session[session_id_for(NIGHT_1)]
    assert first_night["file_names"] == [f"zen.{jd:.5f}.sum.uvh5" for jd in times[:100]]  # time order
    assert (first_night["start_jd"], first_night["end_jd"]) == (NIGHT_1, pytest.approx(NIGHT_1 + 99 * JD_STEP))
    await consumer.drain()  # the projection reads its own closures back: nothing changes
    assert await close_quiet_sessions(ctx, policy, now=later + timedelta(days=1)) == []
    with pytest.raises(SessionAlreadyClosed):
        await close_session(ctx, session_id_for(NIGHT_2))
    assert await ctx.pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'session.closed'") == 2
    assert await ctx.pool.fetchval("SELECT count(*) FROM sessions WHERE closed_at IS NULL") == 0


async def test_the_sweeper_closes_an_idle_session_on_the_wall_clock(settings, amqp, closed_events) -> None:
    settings = catalog_settings(settings, session_sweep_interval_s=0.2, session_quiet_period_s=0.5)
    try:
        async with running_catalog(settings, http=False) as runner:
            ctx = _ctx(runner)
            await publish(amqp, settings, [minted(jd) for jd in night(NIGHT_1, 3)])
            await runner.parts.stream_consumers[0].drain()
            event = await asyncio.wait_for(closed_events.get(), 20)
            assert event["payload"]["file_names"] == [f"zen.{jd:.5f}.sum.uvh5" for jd in night(NIGHT_1, 3)]
            closed_at = await ctx.pool.fetchval("SELECT closed_at FROM sessions")
            assert closed_at == datetime.fromisoformat(event["occurred_at"])
    finally:
        await delete_topology(settings)


def _ctx(runner: ServiceRunner) -> ServiceContext:
    if runner.ctx is None:
        raise RuntimeError("the runner has not started")
    return runner.ctx
