"""The transfer service: standing orders and the transfers that carry them out (services/transfer/routes.py),
checked against this site's catalog over HTTP (catalog_port.py)."""

from __future__ import annotations

from services.transfer.catalog_port import CatalogSearch, service_token
from services.transfer.openapi import openapi_document
from services.transfer.options import TransferOptions
from services.transfer.routes import transfer_routes
from shared.auth.secrets import site_secret
from shared.http.openapi import openapi_routes
from shared.service import ServiceContext, ServiceParts, ServiceSpec


def catalog_of(ctx: ServiceContext, options: TransferOptions) -> CatalogSearch:
    """This site's catalog, searched with the transfer service's own read-only token."""
    settings = ctx.settings
    return CatalogSearch(f"http://{settings.http_host}:{settings.http_port('catalog')}",
                         service_token(site_secret(settings)), timeout_s=options.catalog_timeout_s)


async def build(ctx: ServiceContext) -> ServiceParts:
    """The HTTP API (orders and transfers) and the OpenAPI document."""
    options = TransferOptions.from_settings(ctx.settings)
    catalog = catalog_of(ctx, options)
    parts = ServiceParts(routes=[*transfer_routes(ctx.pool, ctx.settings, options, catalog),
                                 *openapi_routes(openapi_document())])
    parts.at_stop(catalog.close)
    return parts


SPEC = ServiceSpec(name="transfer", build=build, migrations=("services.transfer.migrations",))
