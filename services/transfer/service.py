"""The transfer service. Its event handlers and routes arrive with their issue; today it runs the shared parts
(outbox relay, health, readiness and metrics endpoints) so deployments and supervision are already real."""

from __future__ import annotations

from services.transfer.openapi import openapi_document
from shared.http.openapi import openapi_routes
from shared.service import ServiceContext, ServiceParts, ServiceSpec


async def build(ctx: ServiceContext) -> ServiceParts:
    """No consumers yet: the shared routes and the OpenAPI document."""
    return ServiceParts(routes=openapi_routes(openapi_document()))


SPEC = ServiceSpec(name="transfer", build=build, migrations=("services.transfer.migrations",))
