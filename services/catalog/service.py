"""The catalog service: projects files, instances, observations and sessions from the log; serves search."""

from __future__ import annotations

from services.catalog.openapi import openapi_document
from services.catalog.options import catalog_options
from services.catalog.projection import RESET_PROJECTION, projection_handlers
from services.catalog.routes import catalog_routes
from services.catalog.session_closing import session_sweeper
from shared.http.openapi import openapi_routes
from shared.service import ServiceContext, ServiceParts, ServiceSpec


async def build(ctx: ServiceContext) -> ServiceParts:
    """The projection's stream consumer, the idle-session sweeper and the HTTP API with its OpenAPI document."""
    options = catalog_options(ctx.settings.service_options("catalog"))
    peers = [peer.name for peer in ctx.settings.peers]
    projection = ctx.stream_consumer(dict(projection_handlers(options.policy, ctx.settings.site, ctx.name, peers)))
    return ServiceParts(
        stream_consumers=[projection],
        routes=[*catalog_routes(ctx, options), *openapi_routes(openapi_document())],
        background=[session_sweeper(ctx, projection, options)],
        reset_projection=RESET_PROJECTION,
    )


SPEC = ServiceSpec(name="catalog", build=build, migrations=("services.catalog.migrations",))
