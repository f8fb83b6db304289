"""Two sites side by side on one machine: each owns its schemas and its bus; neither sees the other's events."""

from __future__ import annotations

import asyncpg
import pytest

from services.monitor.service import SPEC
from shared.bus import Topology, publish_event
from shared.runner import ServiceRunner
from tests.foundation.support import minted

pytestmark = pytest.mark.usefixtures("drop_schemas")


async def test_two_sites_share_nothing(settings, amqp) -> None:
    karoo = settings.model_copy(update={"site": "karoo", "schema_prefix": f"{settings.site}_k"})
    nrao = settings.model_copy(
        update={"site": "nrao", "schema_prefix": f"{settings.site}_n", "bus": settings.bus.model_copy(
            update={"prefix": f"{settings.bus.prefix}-nrao"})}
    )
    runners = [ServiceRunner(SPEC, s, http=False) for s in (karoo, nrao)]
    try:
        for runner in runners:
            await runner.start()
        channel = await amqp.channel()
        exchange = await channel.get_exchange(f"{karoo.bus.prefix}.events")
        for i in range(25):
            await publish_event(exchange, minted(i, site="karoo"))
        for runner in runners:
            await runner.parts.stream_consumers[0].drain()
        counts = {}
        for s in (karoo, nrao):
            conn = await asyncpg.connect(s.database_url)
            try:
                counts[s.site] = await conn.fetch(f'SELECT site, events FROM "{s.schema_for("monitor")}".event_counts')
            finally:
                await conn.close()
        assert [tuple(r) for r in counts["karoo"]] == [("karoo", 25)]
        assert counts["nrao"] == []
        assert karoo.schema_for("monitor") != nrao.schema_for("monitor")
    finally:
        for runner in runners:
            await runner.stop()
        async with amqp.channel() as channel:
            for s in (karoo, nrao):
                await Topology(prefix=s.bus.prefix).delete(channel)
