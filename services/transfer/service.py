"""The transfer service: knows every site's files and instances from the log, turns standing orders into
transfers, and sends them to peers through transfer managers (HTTP push, local, Globus)."""

from __future__ import annotations

import asyncio

from services.transfer.catalog_port import CatalogSearch
from services.transfer.dispatch.dispatcher import TransferDispatcher
from services.transfer.dispatch.evaluation import OrderEvaluator
from services.transfer.dispatch.lanes import TransferFigures
from services.transfer.forwarding import Forwarder
from services.transfer.managers.base import TransferManager
from services.transfer.managers.http import HttpPushManager
from services.transfer.managers.local import LocalManager
from services.transfer.openapi import openapi_document
from services.transfer.options import TransferOptions, transfer_options
from services.transfer.routes import transfer_routes
from services.transfer.triggers import RESET_PROJECTION, transfer_handlers
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.http.openapi import openapi_routes
from shared.periodic import every
from shared.service import ServiceContext, ServiceParts, ServiceSpec

CATALOG_TOKEN_TTL_S = 10 * 365 * 86400.0  # held in memory only, re-issued at every start


def catalog_search(ctx: ServiceContext) -> CatalogSearch:
    """This site's catalog, asked with a read-only token the service issues itself."""
    token = issue_token(site_secret(ctx.settings), Principal("transfer", Role.READ_ONLY), CATALOG_TOKEN_TTL_S)
    return CatalogSearch(f"http://{ctx.settings.http_host}:{ctx.settings.http_port('catalog')}", token)


def managers(options: TransferOptions) -> dict[str, TransferManager]:
    """The transfer managers this site can use (Globus only when configured)."""
    found: dict[str, TransferManager] = {"http": HttpPushManager(), "local": LocalManager()}
    if options.globus:
        from services.transfer.managers.globus import globus_manager

        found["globus"] = globus_manager(options.globus)
    return found


async def build(ctx: ServiceContext) -> ServiceParts:
    """The stream consumer, the order evaluator, the dispatcher and the HTTP API."""
    options = transfer_options(ctx.settings.service_options("transfer"))
    catalog = catalog_search(ctx)
    evaluator = OrderEvaluator(ctx.pool, catalog, ctx.settings.site, options)
    forwarder = Forwarder()
    dispatcher = TransferDispatcher(ctx.pool, ctx.schema, ctx.settings, options, managers(options), forwarder,
                                    TransferFigures(ctx.metrics.registry))

    async def evaluate(stop: asyncio.Event) -> None:
        async def pass_() -> None:
            await evaluator.catch_up(only_new=True)
            if await evaluator.evaluate_pending():
                dispatcher.wakeup.set()

        await every(options.evaluation_interval_s, pass_, stop, name="order-evaluation", first_now=True)

    async def catch_up(stop: asyncio.Event) -> None:
        async def sweep() -> None:
            if await evaluator.catch_up():
                dispatcher.wakeup.set()

        await every(options.catch_up_interval_s, sweep, stop, name="order-catch-up", first_now=True)

    parts = ServiceParts(
        stream_consumers=[ctx.stream_consumer(transfer_handlers(ctx.settings.site))],
        routes=[*transfer_routes(ctx, options, catalog), *openapi_routes(openapi_document())],
        background=[evaluate, catch_up, dispatcher.run],
        reset_projection=RESET_PROJECTION,
    )
    parts.at_stop(catalog.close)
    parts.at_stop(forwarder.close)
    return parts


SPEC = ServiceSpec(name="transfer", build=build, migrations=("services.transfer.migrations",))
