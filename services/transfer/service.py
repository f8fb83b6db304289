"""The transfer service. Its event handlers and routes arrive with their issue; today it runs the shared parts
(outbox relay, health, readiness and metrics endpoints) so deployments and supervision are already real."""

from __future__ import annotations

from shared.service import ServiceContext, ServiceParts, ServiceSpec


async def build(ctx: ServiceContext) -> ServiceParts:
    """No consumers yet."""
    return ServiceParts()


SPEC = ServiceSpec(name="transfer", build=build)
