"""The ingest service: turns bytes on a disk into verified, immutable files, three ways in, one path."""

from __future__ import annotations

import asyncio

import structlog

from services.ingest.announced import ANNOUNCED_QUEUE, announced_handler, announcement_job
from services.ingest.hygiene import StagingLocks, keep_staging_clean, sweep_staging
from services.ingest.ingester import Ingester
from services.ingest.openapi import openapi_document
from services.ingest.options import default_source_root, ingest_options
from services.ingest.replicas import replica_routes
from services.ingest.sources import prepare_source_roots
from services.ingest.storage import StoreSet
from services.ingest.uploads import upload_routes
from services.ingest.waiting import WaitingRoom
from shared.events import Event, Payload
from shared.http.openapi import openapi_routes
from shared.service import ServiceContext, ServiceParts, ServiceSpec

log = structlog.get_logger()


async def build(ctx: ServiceContext) -> ServiceParts:
    """Stores ready and swept, the announced-observation consumer, the upload routes, hygiene and metrics."""
    data_dir = ctx.settings.data_dir
    options = ingest_options(ctx.settings.service_options("ingest"), data_dir=data_dir,
                             store_roots=[store.root for store in ctx.settings.stores])
    missing = await asyncio.to_thread(prepare_source_roots, options.source_roots, default_source_root(data_dir))
    if missing:
        log.warning("source_roots_missing", roots=missing, effect="paths there are refused until they exist")
    stores = StoreSet.from_settings(ctx.settings.stores, ctx.metrics.registry)
    await asyncio.to_thread(stores.prepare)
    await stores.refresh_usage(ctx.pool)
    # A crash mid-copy left bytes nobody will commit: remove them before taking new work.
    await sweep_staging(ctx.pool, ctx.schema, stores)

    def make_event(payload: Payload, caused_by: Event | None) -> Event:
        return ctx.event(payload, caused_by=caused_by)

    locks = await StagingLocks.connect(ctx.database_url, ctx.schema)
    ingester = Ingester(site=ctx.settings.site, pool=ctx.pool, locks=locks, stores=stores, options=options,
                        make_event=make_event)
    waiting = WaitingRoom(ingester, ctx.metrics.registry, announcement_job, batch=max(1, options.prefetch // 2))
    # Room reserved by copies a crash interrupted is free again before anything new is placed.
    await waiting.release_abandoned_copies(locks)
    await waiting.count()

    async def refresh_store_usage(stop: asyncio.Event) -> None:
        await stores.refresh_forever(ctx.pool, stop, options.usage_refresh_s)

    async def resume_waiting_announcements(stop: asyncio.Event) -> None:
        await waiting.resume_forever(locks, stop, options.usage_refresh_s)

    async def expire_abandoned_uploads(stop: asyncio.Event) -> None:
        await keep_staging_clean(ctx.pool, locks, ctx.schema, stores, stop, interval_s=options.expiry_interval_s,
                                 expiry_s=options.upload_expiry_s)

    parts = ServiceParts(
        work_consumers=[
            ctx.work_consumer(ANNOUNCED_QUEUE, announced_handler(ingester, options, waiting), prefetch=options.prefetch)
        ],
        routes=[*upload_routes(ingester), *replica_routes(ingester), *openapi_routes(openapi_document())],
        background=[refresh_store_usage, resume_waiting_announcements, expire_abandoned_uploads],
    )
    parts.at_stop(locks.close)  # after the consumers have stopped: releases whatever a cancelled copy held
    return parts


SPEC = ServiceSpec(
    name="ingest", build=build, migrations=("services.ingest.migrations",), work_queues=(ANNOUNCED_QUEUE,)
)
