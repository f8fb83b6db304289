"""Announcements that can never be ingested are dead-lettered by ingest at once, with their reason (issue 8, item 11).

What was seen: an announcement with a 16 MiB path raised OSError (File name too long) deep in ingest, was taken for
a transient failure, delivered 5 times and dead-lettered by the broker's delivery limit, with no x-obsflow-reason
and no dead_letters row.
"""

from __future__ import annotations

import json
from pathlib import Path

import aio_pika
import pytest

from shared.bus.messages import REASON_HEADER
from shared.events import encode_event
from tests.ingest.service_support import (
    announce,
    announcement,
    counts,
    ingest_settings,
    rejection_codes,
    running_ingest,
    write_file,
)

pytestmark = pytest.mark.usefixtures("drop_schemas")


async def _dead_letter_queue(amqp, settings) -> list[aio_pika.abc.AbstractIncomingMessage]:
    async with amqp.channel() as channel:
        queue = await channel.get_queue(f"{settings.bus.prefix}.dead-letters")
        found = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append(message)
        return found


async def test_unusable_paths_are_dead_lettered_or_refused_at_once_with_their_reason(
    settings, amqp, tmp_path: Path
) -> None:
    source = tmp_path / "correlator"
    good = write_file(source / "zen.2459122.30000.sum.uvh5", b"visibilities")
    huge = json.loads(encode_event(announcement(good, site=settings.site)))
    huge["payload"]["path"] = str(source / ("p" * 16 * 1024**2))  # 16 MiB
    over_path_max = json.loads(encode_event(announcement(good, site=settings.site)))
    over_path_max["payload"]["path"] = str(source / ("q" * 5000))
    long_component = announcement(source / ("r" * 300) / "zen.2459122.30001.sum.uvh5", site=settings.site)

    s = ingest_settings(settings, tmp_path / "store", source_roots=[str(source)])
    async with running_ingest(s) as ingest:
        async with amqp.channel() as channel:
            exchange = await channel.get_exchange(f"{settings.bus.prefix}.events")
            for body in (huge, over_path_max):
                await exchange.publish(aio_pika.Message(json.dumps(body).encode(), message_id=body["event_id"]),
                                       routing_key=f"{settings.site}.observation.announced.uvh5")
        await announce(amqp, settings, long_component, announcement(good, site=settings.site))
        consumer = ingest.parts.work_consumers[0]
        await consumer.drain(timeout_s=60)
        assert ingest.ctx is not None
        pool = ingest.ctx.pool
        assert await counts(pool) == (1, 1, 0)  # the good announcement, batched with the bad, is minted
        rows = await pool.fetch("SELECT event_id, reason, length(excerpt) AS kept, body_bytes FROM dead_letters")
        refused = await rejection_codes(pool)
        retried = ingest.ctx.metrics.bus.retried
        dead = await _dead_letter_queue(amqp, settings)

    assert len(rows) == 2
    big = next(r for r in rows if r["body_bytes"] > 16 * 1024**2)
    assert big["event_id"] is None and big["kept"] == 4096  # a bounded excerpt, not 16 MiB
    assert big["reason"] == f"MalformedEvent: the event is {big['body_bytes']} bytes; at most 1048576 are accepted"
    assert any(r["reason"].startswith("MalformedEvent: observation.announced event invalid at payload.path: ")
               and "at most 4096" in r["reason"] for r in rows)
    # A path whose component no filesystem allows is a well-formed event with a bad path: refused, as every
    # path beneath the source roots that cannot be read is (an ingest.rejected event, not a dead letter).
    assert refused == ["invalid_path"]
    # Each once, at its first delivery, by ingest itself: a reason on the broker's copy, nothing left to retry.
    assert len(dead) == 2 and all(m.headers.get(REASON_HEADER) for m in dead)
    assert all(int(m.headers.get("x-delivery-count", 0)) == 0 for m in dead)
    assert sum(sample.value for metric in retried.collect() for sample in metric.samples
               if sample.name.endswith("_total")) == 0
