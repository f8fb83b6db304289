"""The transfer service: knows every site's files and instances from the log, turns standing orders into
transfers, and sends them to peers through transfer managers (HTTP push, local, Globus)."""

from __future__ import annotations

import asyncio

from services.transfer.catalog_port import CatalogSearch, service_token
from services.transfer.dispatch.dispatcher import TransferDispatcher
from services.transfer.dispatch.evaluation import OrderEvaluator
from services.transfer.dispatch.lanes import TransferFigures
from services.transfer.forwarding import Forwarder
from services.transfer.managers.base import TransferManager
from services.transfer.managers.http import HttpPushManager
from services.transfer.managers.local import LocalManager
from services.transfer.openapi import openapi_document
from services.transfer.options import TransferOptions
from services.transfer.routes import transfer_routes
from services.transfer.triggers import RESET_PROJECTION, transfer_handlers
from shared.auth.secrets import site_secret
from shared.http.openapi import openapi_routes
from shared.periodic import every
from shared.service import ServiceContext, ServiceParts, ServiceSpec


def catalog_of(ctx: ServiceContext, options: TransferOptions) -> CatalogSearch:
    """This site's catalog, searched with the transfer service's own read-only token."""
    settings = ctx.settings
    return CatalogSearch(f"http://{settings.http_host}:{settings.http_port('catalog')}",
                         service_token(site_secret(settings)), timeout_s=options.catalog_timeout_s)


def managers(options: TransferOptions) -> dict[str, TransferManager]:
    """The transfer managers this site can use (Globus only when configured)."""
    local = LocalManager()
    found: dict[str, TransferManager] = {"http": HttpPushManager(), "local": local}
    if options.globus:
        from services.transfer.managers.globus import GlobusManager
        from services.transfer.managers.globus_options import globus_options

        found["globus"] = GlobusManager(globus_options(options.globus), local.adopt)
    return found


async def build(ctx: ServiceContext) -> ServiceParts:
    """The stream consumer, the order evaluator, the dispatcher and the HTTP API."""
    options = TransferOptions.from_settings(ctx.settings)
    catalog = catalog_of(ctx, options)
    figures = TransferFigures(ctx.metrics.registry)
    evaluator = OrderEvaluator(ctx.pool, catalog, ctx.settings.site, options, figures)
    forwarder = Forwarder()
    dispatcher = TransferDispatcher(ctx.pool, ctx.schema, ctx.settings, options, managers(options), forwarder,
                                    figures, lambda payload: ctx.event(payload))

    async def evaluate(stop: asyncio.Event) -> None:
        async def new_names() -> None:
            created = await evaluator.catch_up(only_new=True) + await evaluator.evaluate_pending()
            if created:
                dispatcher.wakeup.set()

        await every(options.evaluation_interval_s, new_names, stop, name="order-evaluation", first_now=True)

    async def catch_up(stop: asyncio.Event) -> None:
        async def sweep() -> None:
            if await evaluator.catch_up():
                dispatcher.wakeup.set()

        await every(options.catch_up_interval_s, sweep, stop, name="order-catch-up", first_now=True)

    parts = ServiceParts(
        stream_consumers=[ctx.stream_consumer(transfer_handlers(ctx.settings.site))],
        routes=[*transfer_routes(ctx.pool, ctx.settings, options, catalog), *openapi_routes(openapi_document())],
        background=[evaluate, catch_up, dispatcher.run],
        reset_projection=RESET_PROJECTION,
    )
    parts.at_stop(catalog.close)
    parts.at_stop(forwarder.close)
    return parts


SPEC = ServiceSpec(name="transfer", build=build, migrations=("services.transfer.migrations",))
