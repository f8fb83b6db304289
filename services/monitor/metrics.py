"""Prometheus figures the monitor derives from its projection, refreshed in the background."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.periodic import every

REFRESH_S = 5.0


class EventTallyCollector(Collector):
    """Serves the last snapshot of `event_counts` as `obsflow_site_events_total` and event age gauges."""

    def __init__(self) -> None:
        self._rows: list[asyncpg.Record] = []

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read the projection once."""
        self._rows = await pool.fetch(
            "SELECT site, event_type, events, extract(epoch FROM last_occurred_at) AS last FROM event_counts"
        )

    async def refresh_forever(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        """Refresh every few seconds until `stop` is set; while the database is down, the last figures are served."""

        async def refresh() -> None:
            await self.refresh(pool)

        await every(REFRESH_S, refresh, stop, name="event_tally_refresh", first_now=True)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        total = CounterMetricFamily(
            "obsflow_site_events", "Events seen on the log, by origin site and type", labels=["site", "type"]
        )
        age = GaugeMetricFamily(
            "obsflow_site_last_event_age_seconds", "Seconds since the newest event of each site and type",
            labels=["site", "type"],
        )
        now = time.time()
        for r in self._rows:
            total.add_metric([r["site"], r["event_type"]], r["events"])
            age.add_metric([r["site"], r["event_type"]], max(0.0, now - float(r["last"])))
        yield total
        yield age
