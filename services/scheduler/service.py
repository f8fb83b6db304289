"""The scheduler service: starts workflow runs on session.closed / file.minted events and HTTP requests, and
drives them through a batch backend (local, Slurm or PBS), persisting every attempt so it can resume."""

from __future__ import annotations

import asyncio
import os

from services.scheduler.openapi import openapi_document
from services.scheduler.routes import scheduler_routes
from services.scheduler.runs.dispatcher import Dispatcher
from services.scheduler.runs.job_tokens import job_tokens
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.triggers import RunTriggers
from shared.auth.secrets import site_secret
from shared.http.openapi import openapi_routes
from shared.service import ServiceContext, ServiceParts, ServiceSpec


async def build(ctx: ServiceContext) -> ServiceParts:
    """A stream consumer that creates runs, the dispatcher that runs them, and the HTTP API."""
    options = SchedulerOptions.from_settings(ctx.settings)
    # Jobs get a token of their own (their upload steps just work), unless the operator gave them one.
    tokens = None if os.environ.get("OBSFLOW_TOKEN") else job_tokens(site_secret(ctx.settings))
    dispatcher = Dispatcher(  # builds every backend now: a bad backend option stops the start-up, named
        ctx.pool, ctx.schema, options, lambda payload: ctx.event(payload),
        shutdown_grace_s=ctx.settings.shutdown_grace_s, tokens=tokens,
    )

    async def dispatch(stop: asyncio.Event) -> None:
        await dispatcher.run(stop)

    return ServiceParts(
        stream_consumers=[ctx.stream_consumer(RunTriggers(options, site=ctx.settings.site).handlers())],
        routes=[*scheduler_routes(ctx, options, dispatcher), *openapi_routes(openapi_document())],
        background=[dispatch],
        # Runs are not a projection of the log: replay empties nothing and, thanks to the unique
        # (workflow, trigger event) pair and the registration-time check, starts nothing new.
        reset_projection=(),
    )


SPEC = ServiceSpec(name="scheduler", build=build, migrations=("services.scheduler.migrations",))
