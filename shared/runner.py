"""Runs one service: pool, migrations, topology, outbox relay, consumers, HTTP (/healthz, /readyz, /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import time
from collections.abc import Awaitable

import aio_pika
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from shared import credentials
from shared.auth.accounts import migrate_accounts
from shared.auth.secrets import SiteSecret, load_site_secret
from shared.bus.outbox import OutboxRelay
from shared.bus.topology import Topology
from shared.db import apply_migrations, create_pool
from shared.db.pool import ConnectionBudget
from shared.errors import BrokerUnavailable, ConfigurationError
from shared.failures import describe, is_transient
from shared.http.auth import AUTH_SECRET, auth_middleware
from shared.http.body import BODY_LIMITS, BodyLimits
from shared.http.errors import error_middleware
from shared.http.tokens import token_routes
from shared.metrics import ServiceMetrics
from shared.periodic import every
from shared.service import ServiceContext, ServiceParts, ServiceSpec
from shared.settings import SERVICES, Settings

log = structlog.get_logger()

ATTACH_TIMEOUT_S = 30.0  # how long start() waits for the work consumers to attach
HANDLED_IDS_PRUNING_S = 3600.0


def load_spec(name: str) -> ServiceSpec:
    """The ServiceSpec of `services/<name>/service.py`."""
    if name not in SERVICES:
        raise ConfigurationError(f"unknown service {name!r}; the services are {', '.join(SERVICES)}")
    spec = importlib.import_module(f"services.{name}.service").SPEC
    if not isinstance(spec, ServiceSpec):
        raise ConfigurationError(f"services.{name}.service.SPEC is not a ServiceSpec")
    return spec


class ServiceRunner:
    """Starts a service's parts in order, serves its HTTP endpoints, and stops it gracefully."""

    def __init__(self, spec: ServiceSpec, settings: Settings, *, http: bool = True) -> None:
        self.spec = spec
        self.settings = settings
        self.stop_event = asyncio.Event()
        self._http = http
        self._tasks: list[asyncio.Task[None]] = []
        self._http_runner: web.AppRunner | None = None
        self._secret: SiteSecret | None = None
        self._started_at = time.monotonic()
        self.ctx: ServiceContext | None = None
        self.parts = ServiceParts()
        self.relay: OutboxRelay | None = None
        self.failed = False  # a part died: the process exits non-zero so its supervisor restarts it

    @property
    def http_app(self) -> web.Application | None:
        """The running aiohttp application (its router is the service's route table); None before HTTP starts."""
        return self._http_runner.app if self._http_runner is not None else None

    async def prepare(self) -> ServiceContext:
        """Connect, migrate, declare the topology and build the service's parts, without starting them."""
        s, name = self.settings, self.spec.name
        schema = s.schema_for(name)
        database_url, amqp_url = credentials.database_url(s, name), credentials.amqp_url(s, name)
        pool = await create_pool(database_url, schema, budget=ConnectionBudget.from_settings(s))
        await apply_migrations(pool, schema, self.spec.all_migrations)
        try:
            amqp = await aio_pika.connect_robust(amqp_url)
        except Exception as e:  # translated at the edge: the operator is told which broker could not be reached
            await pool.close()
            if not is_transient(e):
                raise
            raise BrokerUnavailable(f"cannot reach RabbitMQ at {credentials.redacted(amqp_url)}: {describe(e)}") from e
        topology = Topology.from_settings(s.bus, self.spec.work_queues)
        own = credentials.own_credentials(s)
        if own:  # a service may not configure the broker: `obsflow setup` declared the topology
            await topology.check(amqp)
        else:
            async with amqp.channel() as channel:
                await topology.declare(channel)
        metrics = ServiceMetrics()
        verify = s.bus.verify_publishers if s.bus.verify_publishers is not None else own
        self.ctx = ctx = ServiceContext(name, s, schema, pool, amqp, topology, metrics, self.stop_event,
                                        database_url, amqp_url, verify)
        self.relay = OutboxRelay(pool, schema, amqp, topology, metrics.bus, user_id=URL(amqp_url).user)
        self.parts = await self.spec.build(ctx)
        return ctx

    async def start(self) -> ServiceContext:
        """Build and start everything; return the context (tests use it to reach the pool and parts)."""
        if self._http:  # a guessable auth secret stops the start-up before anything is touched
            self._secret = load_site_secret(self.settings)
        ctx = await self.prepare()
        s, name = self.settings, self.spec.name
        if self.relay is None:
            raise ConfigurationError("prepare() did not build the outbox relay")
        for consumer in self.parts.work_consumers:
            self._spawn(consumer.run(self.stop_event), f"work-{consumer.name}")
        await self._until_work_consumers_attach()
        self._spawn(self.relay.run(self.stop_event), "outbox-relay")
        for sc in self.parts.stream_consumers:
            self._spawn(sc.run(self.stop_event), f"stream-{sc.name}")
        self._spawn(self._forget_old_handled_ids(ctx), "handled-ids-pruning")
        for bg in self.parts.background:
            self._spawn(bg(self.stop_event), getattr(bg, "__name__", "background"))
        if self._http:
            await self._start_http(ctx)
        log.info("service_started", schema=ctx.schema, port=s.http_port(name) if self._http else None)
        return ctx

    async def _until_work_consumers_attach(self) -> None:
        """Return once every work consumer consumes its queue (a service that cannot is not started)."""
        consumers = self.parts.work_consumers
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while not all(c.attached for c in consumers):
            if self.stop_event.is_set():
                raise BrokerUnavailable("a work consumer failed while starting; see service_part_failed")
            if time.monotonic() > deadline:
                late = ", ".join(c.queue_name for c in consumers if not c.attached)
                raise BrokerUnavailable(f"could not consume {late} within {ATTACH_TIMEOUT_S:.0f} s; is RabbitMQ up?")
            await asyncio.sleep(0.02)  # a poll interval between checks of a condition

    async def _forget_old_handled_ids(self, ctx: ServiceContext) -> None:
        """Drop handled-event ids older than the retention (the log no longer holds those events) every hour."""

        async def prune() -> None:
            await ctx.pool.execute(
                "DELETE FROM handled_events WHERE handled_at < now() - make_interval(secs => $1)",
                self.settings.bus.handled_retention_s,
            )

        await every(HANDLED_IDS_PRUNING_S, prune, self.stop_event, name="handled_ids_pruning", first_now=True)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A part died of an error nobody handled: stop the whole service so the supervisor restarts it.
        log.error("service_part_failed", part=task.get_name(), error=repr(task.exception()))
        self.failed = True
        self.stop_event.set()

    async def _start_http(self, ctx: ServiceContext) -> None:
        s = self.settings
        secret = self._secret or load_site_secret(s)
        if not credentials.own_credentials(s):
            # Once per start-up: the token endpoint then reads the table on ctx.pool. A service with a role of its
            # own may only read the accounts tables, which `obsflow setup` created as the accounts role.
            await migrate_accounts(s)
        limits = BodyLimits(max_bytes=s.http_max_body_bytes, read_timeout_s=s.http_read_timeout_s,
                            total_timeout_s=s.http_body_timeout_s)
        app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=limits.max_bytes)
        app[AUTH_SECRET] = secret
        app[BODY_LIMITS] = limits
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_routes(token_routes(s, ctx.pool, secret))
        app.router.add_routes(self.parts.routes)
        # Half the grace to let requests in flight finish, half to cancel them (aiohttp waits twice at most);
        # _stop_http bounds the whole by the stop's deadline anyway.
        self._http_runner = web.AppRunner(app, access_log=None, shutdown_timeout=s.shutdown_grace_s / 2,
                                          keepalive_timeout=s.http_idle_timeout_s)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, s.http_host, s.http_port(ctx.name))
        await site.start()

    async def _stop_listening(self) -> None:
        """Take no new HTTP connections (requests in flight go on until _stop_http)."""
        if self._http_runner is not None:
            for site in list(self._http_runner.sites):
                await site.stop()

    async def _stop_http(self, deadline: float) -> None:
        """Close the listeners and idle connections, let requests in flight finish until `deadline`, then cut
        whatever is left (a stalled body, a client that never reads): a stop never outlasts the grace period."""
        runner, self._http_runner = self._http_runner, None
        if runner is None:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                await runner.cleanup()
        except TimeoutError:
            server = runner.server
            cut = server.connections if server is not None else []
            for connection in cut:
                connection.force_close()
            log.warning("http_connections_cut", connections=len(cut),
                        overran_s=round(loop.time() - deadline, 2))

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"service": self.spec.name, "status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self.ctx is None:
            return web.json_response({"ready": False, "reason": "starting"}, status=503)
        problems = []
        try:
            await asyncio.wait_for(self.ctx.pool.fetchval("SELECT 1"), timeout=2)
        except Exception as e:  # readiness reports any database failure rather than crashing the probe
            problems.append(f"database: {e!r}")
        if self.ctx.amqp.is_closed:
            problems.append("broker: connection closed")
        problems.extend(self._detached_consumers())
        status = 200 if not problems else 503
        return web.json_response({"ready": not problems, "problems": problems}, status=status)

    def _detached_consumers(self) -> list[str]:
        """A problem for each consumer that is not consuming (a stream consumer standing by for its lock is fine)."""
        problems = [f"work consumer {c.name}: not attached to {c.queue_name}"
                    for c in self.parts.work_consumers if not c.attached]
        problems.extend(f"stream consumer {c.name}: not attached to the log"
                        for c in self.parts.stream_consumers if not (c.attached or c.standby))
        return problems

    async def _metrics(self, _request: web.Request) -> web.Response:
        registry = self.ctx.metrics.registry if self.ctx else None
        body = generate_latest(registry) if registry else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        """Stop taking work, finish what is in flight within the grace period, close pools; log one summary."""
        self.stop_event.set()
        grace = self.settings.shutdown_grace_s
        deadline = asyncio.get_running_loop().time() + grace
        await self._stop_listening()
        # Every part stops at once (work consumers finish their deliveries in flight in parallel), within one grace.
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                log.warning("service_part_cancelled_at_stop", part=task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._stop_http(deadline)
        await self._run_shutdown_hooks(deadline)  # after the requests in flight: an upload may hold a staging lock
        if self.relay is not None:
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await self.relay.close()
        if self.ctx is not None:
            with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError):
                await self.ctx.amqp.close()
            await self.ctx.pool.close()
        log.info(
            "service_stopped",
            uptime_s=round(time.monotonic() - self._started_at, 1),
            published=self.relay.published if self.relay else 0,
            stream_events_applied=sum(c.applied for c in self.parts.stream_consumers),
            work_events_handled=sum(c.handled for c in self.parts.work_consumers),
        )

    async def _run_shutdown_hooks(self, deadline: float) -> None:
        """The parts' shutdown hooks, last registered first, each within what is left of the grace (at least 1 s)."""
        for hook in reversed(self.parts.on_stop):
            name = getattr(hook, "__qualname__", repr(hook))
            try:
                await asyncio.wait_for(hook(), timeout=max(1.0, deadline - asyncio.get_running_loop().time()))
            except Exception as e:  # at stop, one hook's failure must not keep the pools open: it is reported
                log.error("shutdown_hook_failed", hook=name, error=describe(e), exc_info=e)
                self.failed = True

    async def run_until_signalled(self) -> None:
        """Start, run until SIGTERM/SIGINT (or a part fails), then stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        try:
            await self.start()
            await self.stop_event.wait()
        finally:
            await self.stop()
