"""The ingest service: turns bytes on a disk into verified, immutable files, three ways in, one path."""

from __future__ import annotations

import asyncio

from services.ingest.announced import ANNOUNCED_QUEUE, announced_handler
from services.ingest.hygiene import StagingLocks, keep_staging_clean, sweep_staging
from services.ingest.ingester import Ingester
from services.ingest.options import ingest_options
from services.ingest.storage import StoreSet
from services.ingest.uploads import upload_routes
from shared.events import Event, Payload
from shared.service import ServiceContext, ServiceParts, ServiceSpec


async def build(ctx: ServiceContext) -> ServiceParts:
    """Stores ready and swept, the announced-observation consumer, the upload routes, hygiene and metrics."""
    options = ingest_options(ctx.settings.service_options("ingest"))
    stores = StoreSet.from_settings(ctx.settings.stores, ctx.metrics.registry)
    await asyncio.to_thread(stores.prepare)
    await stores.refresh_usage(ctx.pool)
    # A crash mid-copy left bytes nobody will commit: remove them before taking new work.
    await sweep_staging(ctx.pool, ctx.schema, stores)

    def make_event(payload: Payload, caused_by: Event | None) -> Event:
        return ctx.event(payload, caused_by=caused_by)

    locks = await StagingLocks.connect(ctx.settings.database_url, ctx.schema)
    ingester = Ingester(site=ctx.settings.site, pool=ctx.pool, locks=locks, stores=stores, options=options,
                        make_event=make_event)

    async def refresh_store_usage(stop: asyncio.Event) -> None:
        await stores.refresh_forever(ctx.pool, stop, options.usage_refresh_s)

    async def expire_abandoned_uploads(stop: asyncio.Event) -> None:
        await keep_staging_clean(ctx.pool, locks, ctx.schema, stores, stop, interval_s=options.expiry_interval_s,
                                 expiry_s=options.upload_expiry_s)

    parts = ServiceParts(
        work_consumers=[
            ctx.work_consumer(ANNOUNCED_QUEUE, announced_handler(ingester, options), prefetch=options.prefetch)
        ],
        routes=upload_routes(ingester),
        background=[refresh_store_usage, expire_abandoned_uploads],
    )
    parts.at_stop(locks.close)  # after the consumers have stopped: releases whatever a cancelled copy held
    return parts


SPEC = ServiceSpec(
    name="ingest", build=build, migrations=("services.ingest.migrations",), work_queues=(ANNOUNCED_QUEUE,)
)
