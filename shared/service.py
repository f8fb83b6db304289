"""What a service declares (its schema's migrations, work queues, consumers, routes) and what it is handed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from shared.bus.stream_consumer import StreamConsumer, StreamHandler
from shared.bus.topology import Topology, WorkQueue
from shared.bus.work_consumer import WorkHandlerSpec, WorkQueueConsumer
from shared.events import Event, Payload, new_event
from shared.metrics import ServiceMetrics
from shared.settings import Settings

BUS_MIGRATIONS = "shared.bus.migrations"


@dataclass
class ServiceContext:
    """Everything built at start-up and handed to a service: no module-level state anywhere."""

    name: str
    settings: Settings
    schema: str
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    topology: Topology
    metrics: ServiceMetrics
    stop: asyncio.Event
    database_url: str  # this service's own connection URLs (its role, its broker user)
    amqp_url: str
    verify_publishers: bool = False  # refuse events whose broker user is not a producer of their type

    def event(self, payload: Payload, caused_by: Event | None = None) -> Event:
        """A new event from this service at this site."""
        return new_event(payload, site=self.settings.site, producer=self.name, caused_by=caused_by)

    def stream_consumer(self, handlers: Mapping[str, StreamHandler], *, name: str | None = None) -> StreamConsumer:
        """A consumer of the site's log stream, checkpointed in this service's schema."""
        return StreamConsumer(
            name or self.name, self.pool, self.amqp_url, self.topology, handlers, self.metrics.bus,
            batch_size=self.settings.bus.prefetch, max_event_bytes=self.settings.bus.max_event_bytes,
            shutdown_grace_s=in_flight_grace(self.settings.shutdown_grace_s), verify_publishers=self.verify_publishers,
        )

    def work_consumer(self, queue: WorkQueue, handler: WorkHandlerSpec, *, prefetch: int = 8) -> WorkQueueConsumer:
        """A consumer of one of this service's work queues, on a broker connection of its own."""
        return WorkQueueConsumer(
            f"{self.name}.{queue.name}", queue, self.pool, self.amqp_url, self.topology, handler,
            self.metrics.bus, prefetch=prefetch, max_event_bytes=self.settings.bus.max_event_bytes,
            shutdown_grace_s=in_flight_grace(self.settings.shutdown_grace_s), verify_publishers=self.verify_publishers,
        )


def in_flight_grace(shutdown_grace_s: float) -> float:
    """How long work in flight may take to finish at stop: most of the grace, the rest is for closing connections."""
    return shutdown_grace_s * 0.75


Background = Callable[[asyncio.Event], Awaitable[None]]
ShutdownHook = Callable[[], Awaitable[None]]


@dataclass
class ServiceParts:
    """The running pieces a service's `build` returns; the runner starts and stops them.

    `on_stop` hooks run once consumers and background tasks have stopped, before the pools close, last registered
    first (release what the parts held: a dedicated connection, a thread pool).
    """

    stream_consumers: list[StreamConsumer] = field(default_factory=list)
    work_consumers: list[WorkQueueConsumer] = field(default_factory=list)
    routes: list[web.RouteDef] = field(default_factory=list)
    background: list[Background] = field(default_factory=list)
    reset_projection: Sequence[str] = ()  # SQL that empties the state replay rebuilds
    on_stop: list[ShutdownHook] = field(default_factory=list)

    def at_stop(self, hook: ShutdownHook) -> None:
        """Register `hook` to run at stop (after the consumers and background tasks, before the pools close)."""
        self.on_stop.append(hook)


@dataclass(frozen=True)
class ServiceSpec:
    """A service: its name, its migration packages, its work queues and how to build its parts."""

    name: str
    build: Callable[[ServiceContext], Awaitable[ServiceParts]]
    migrations: tuple[str, ...] = ()
    work_queues: tuple[WorkQueue, ...] = ()

    @property
    def all_migrations(self) -> list[str]:
        """The shared bus tables first, then the service's own."""
        return [BUS_MIGRATIONS, *self.migrations]
