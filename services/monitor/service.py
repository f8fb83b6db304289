"""The monitor service: tallies every event on the log and serves the figures to Prometheus."""

from __future__ import annotations

import asyncio

from services.monitor.metrics import EventTallyCollector
from services.monitor.openapi import openapi_document
from services.monitor.projection import PROJECTION_TABLES, count_events
from shared.bus.stream_consumer import StreamHandler
from shared.events import registered_types
from shared.http.openapi import openapi_routes
from shared.service import ServiceContext, ServiceParts, ServiceSpec


async def build(ctx: ServiceContext) -> ServiceParts:
    """A stream consumer over every event type, and the collector that exposes its tallies."""
    collector = EventTallyCollector()
    ctx.metrics.registry.register(collector)

    async def refresh(stop: asyncio.Event) -> None:
        await collector.refresh_forever(ctx.pool, stop)

    handlers: dict[str, StreamHandler] = {event_type: count_events for event_type in registered_types()}
    return ServiceParts(
        stream_consumers=[ctx.stream_consumer(handlers)],
        routes=openapi_routes(openapi_document()),
        background=[refresh],
        reset_projection=[f"TRUNCATE {table}" for table in PROJECTION_TABLES],
    )


SPEC = ServiceSpec(name="monitor", build=build, migrations=("services.monitor.migrations",))
