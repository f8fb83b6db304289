"""The catalog service (being built: issue 3)."""

from __future__ import annotations

from shared.service import ServiceContext, ServiceParts, ServiceSpec


async def build(ctx: ServiceContext) -> ServiceParts:
    """No consumers yet."""
    return ServiceParts()


SPEC = ServiceSpec(name="catalog", build=build)
