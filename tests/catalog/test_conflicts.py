"""Conflicting mints: a peer's file.minted of a known name with other contents is recorded and announced, once;
a peer's observations are catalogued as files but grouped into sessions only by the peer's own catalog."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from services.catalog.conflicts import conflict_event_id
from services.catalog.service import SPEC
from shared.auth import Role
from shared.events import Event, decode_event, new_event
from shared.events.types import FileMinted
from shared.runner import ServiceRunner
from shared.settings import PeerSettings
from tests.catalog.catalog_harness import (
    NIGHT_1,
    catalog_settings,
    delete_topology,
    minted,
    publish,
    running_catalog,
    token,
)
from tests.catalog.test_cli import printed_json, run

pytestmark = pytest.mark.usefixtures("drop_schemas")


def remint(event: Event, *, site: str, checksum: str | None = None, size: int | None = None) -> Event:
    """The same name minted at `site`, with these contents (a new event)."""
    p = event.payload
    assert isinstance(p, FileMinted)
    changed = p.model_copy(update={"origin_site": site, "checksum": checksum or p.checksum,
                                   "size": p.size if size is None else size})
    return new_event(changed, site=site, producer="ingest")


async def _conflicted_events(amqp: aio_pika.abc.AbstractRobustConnection, prefix: str) -> tuple[
        aio_pika.abc.AbstractChannel, asyncio.Queue[Event]]:
    received: asyncio.Queue[Event] = asyncio.Queue()
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(f"{prefix}.events", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="*.file.conflicted")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await received.put(decode_event(message.body))

    await queue.consume(on_message)
    return channel, received


async def test_a_peers_mint_of_a_known_name_with_other_contents_is_a_conflict_recorded_once(
    settings, amqp, monkeypatch, capsys
) -> None:
    settings = catalog_settings(settings.model_copy(update={"peers": [PeerSettings(name="nrao")]}),
                                session_sweep_interval_s=3600)
    monkeypatch.delenv("OBSFLOW_CONFIG_FILE", raising=False)
    monkeypatch.setenv("OBSFLOW_HTTP_BASE_PORT", str(settings.http_base_port))
    monkeypatch.setenv("OBSFLOW_TOKEN", token(settings, Role.READ_ONLY))
    ours = minted(NIGHT_1, site=settings.site)
    assert isinstance(ours.payload, FileMinted)
    name = ours.payload.name
    theirs = remint(ours, site="nrao", checksum="xxh3-128:" + "f" * 32)
    bigger = remint(ours, site="nrao", size=5)  # another content again: a second conflict
    same = remint(ours, site="nrao")  # the same file minted at nrao too: no conflict
    replayed = remint(ours, site="nrao", checksum="xxh3-128:" + "f" * 32)  # theirs again, under another event id
    peer_only = minted(NIGHT_1 + 0.5, site="nrao")
    async with running_catalog(settings) as runner:
        assert runner.ctx is not None
        pool, consumer = runner.ctx.pool, runner.parts.stream_consumers[0]
        channel, received = await _conflicted_events(amqp, settings.bus.prefix)
        try:
            await publish(amqp, settings, [ours, theirs, theirs, same, replayed, bigger, peer_only])
            await consumer.drain()
            rows = await pool.fetch(
                "SELECT name, kept_site, kept_checksum, kept_size, other_site, other_checksum, other_size,"
                " other_event_id, event_id FROM conflicts ORDER BY other_size DESC")
            p, other = ours.payload, theirs.payload
            assert isinstance(p, FileMinted) and isinstance(other, FileMinted)
            assert [tuple(r) for r in rows] == [
                (name, settings.site, p.checksum, p.size, "nrao", other.checksum, p.size, theirs.event_id,
                 conflict_event_id(settings.site, name, "nrao", other.checksum, p.size)),
                (name, settings.site, p.checksum, p.size, "nrao", p.checksum, 5, bigger.event_id,
                 conflict_event_id(settings.site, name, "nrao", p.checksum, 5)),
            ]
            # The kept file is ours, unchanged.
            kept = await pool.fetchrow("SELECT origin_site, checksum FROM files WHERE name = $1", name)
            assert tuple(kept) == (settings.site, p.checksum)
            # Each conflict was announced once, from this site's catalog, caused by the other mint.
            events = [await asyncio.wait_for(received.get(), 20) for _ in rows]
            assert sorted(e.event_id for e in events) == sorted(r["event_id"] for r in rows)
            assert {(e.site, e.producer, e.routing_key) for e in events} == {
                (settings.site, "catalog", f"{settings.site}.file.conflicted")}
            assert {e.causation_id for e in events} == {theirs.event_id, bigger.event_id}
            assert await pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'file.conflicted'") == 2
            # A peer's files are catalogued; its observations are grouped by its own catalog, not here.
            assert await pool.fetchval("SELECT count(*) FROM files WHERE origin_site = 'nrao'") == 1
            assert await pool.fetchval("SELECT array_agg(observation_id) FROM observations") == [p.observation_id]

            code, out = await run(capsys, "conflicts", "--json")
            listed = printed_json(out)["results"]
            assert code == 0 and sorted(c["other_size"] for c in listed) == [5, p.size]
            assert {c["other_event_id"] for c in listed} == {str(theirs.event_id), str(bigger.event_id)}
            code, out = await run(capsys, "conflicts")
            assert code == 0 and "KEPT_SITE" in out.upper() and "nrao" in out
        finally:
            await channel.close()
        assert received.empty()

    # Replayed from the first offset, the catalog notices nothing new and emits nothing again.
    replay = ServiceRunner(SPEC, settings, http=False)
    try:
        ctx = await replay.prepare()
        await replay.parts.stream_consumers[0].rebuild(replay.parts.reset_projection, timeout_s=60)
        assert await ctx.pool.fetchval("SELECT count(*) FROM conflicts") == 2
        assert await ctx.pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'file.conflicted'") == 2
        assert await ctx.pool.fetchval("SELECT count(*) FROM files WHERE name = $1", name) == 1
    finally:
        await replay.stop()
        await delete_topology(settings)
