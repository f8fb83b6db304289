"""The services a client talks to (ingest, catalog, scheduler), running in-process on the real PostgreSQL and
RabbitMQ with a site of their own, for the client's tests; and what the tests feed them."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aio_pika

from shared.auth import Principal, Role, issue_token
from shared.bus import Topology, publish_event
from shared.client import ObsflowClient, Site
from shared.events import Event, new_event
from shared.events.types import FileMinted, InstanceCreated
from shared.runner import ServiceRunner, load_spec
from shared.settings import Settings
from tests.api.site import site_settings
from tests.infra import drop_site_schemas

SERVICES_UNDER_TEST = ("ingest", "catalog", "scheduler")
_NIGHTS = itertools.count()


@dataclass
class ClientSite:
    """A running site and helpers to fill its catalog."""

    settings: Settings
    root: Path
    runners: dict[str, ServiceRunner] = field(default_factory=dict)

    @property
    def site(self) -> Site:
        """Where its services listen and its log is, as the client's Site."""
        return Site.from_settings(self.settings)

    def token(self, role: Role = Role.ADMIN, account: str | None = None) -> str:
        """A token of `role` signed with the site's secret."""
        secret = self.settings.auth_secret.get_secret_value()  # type: ignore[union-attr]
        return issue_token(secret, Principal(account or f"client-{role.label}", role), 3600)

    def client(self, role: Role = Role.ADMIN, account: str | None = None) -> ObsflowClient:
        """A client of the site with a token of `role`."""
        return ObsflowClient(self.site, self.token(role, account))

    async def start(self) -> None:
        """Start the services, in SERVICES order."""
        for name in SERVICES_UNDER_TEST:
            runner = ServiceRunner(load_spec(name), self.settings)
            self.runners[name] = runner  # before start: a half-started site is stopped too
            await runner.start()

    async def stop(self) -> None:
        """Stop the services; delete the site's bus names and schemas."""
        for runner in reversed(self.runners.values()):
            await runner.stop()
        queues = tuple(q for name in SERVICES_UNDER_TEST for q in load_spec(name).work_queues)
        connection = await aio_pika.connect(self.settings.amqp_url)
        async with connection, connection.channel() as channel:
            await Topology.from_settings(self.settings.bus, queues).delete(channel)
        await drop_site_schemas(self.settings.database_url, self.settings.site)

    async def publish(self, *events: Event) -> None:
        """Publish events on the site's exchange, in order."""
        connection = await aio_pika.connect(self.settings.amqp_url)
        async with connection, connection.channel() as channel:
            exchange = await channel.get_exchange(f"{self.settings.bus.prefix}.events")
            for event in events:
                await publish_event(exchange, event)

    async def catalogued(self, *events: Event) -> None:
        """Publish events and wait until the catalog has applied them."""
        await self.publish(*events)
        await self.runners["catalog"].parts.stream_consumers[0].drain()

    def night(self, count: int, *, file_type: str = "uvh5", site: str | None = None) -> list[Event]:
        """file.minted of `count` observations of a night no other test uses (its own session)."""
        start = 2459200.3 + next(_NIGHTS) * 3.0
        return [minted(round(start + i * 0.00018, 5), site=site or self.settings.site, file_type=file_type)
                for i in range(count)]


def minted(jd: float, *, site: str, file_type: str = "uvh5") -> Event:
    """file.minted of the HERA file of the observation starting at `jd`."""
    observation = f"zen.{jd:.5f}"
    return new_event(FileMinted(
        name=f"{observation}.sum.{file_type}", size=1000, checksum=f"xxh3-128:{uuid.uuid4().hex}", file_type=file_type,
        observation_id=observation, start_jd=jd, duration_s=15.5, origin_site=site, uploader="correlator",
        created_at=datetime(2020, 9, 30, tzinfo=UTC),
    ), site=site, producer="ingest")


def instance_at(name: str, site: str, path: str) -> Event:
    """instance.created of a copy of `name` at `site`."""
    return new_event(InstanceCreated(file_name=name, site=site, store="main", path=path, size=1000,
                                     checksum="xxh3-128:00", verified_at=datetime.now(UTC)),
                     site=site, producer="transfer")


def client_site_settings(root: Path) -> Settings:
    """A private site's settings (tests/api's: a store, a source root, the scheduler's scripts and inputs)."""
    return site_settings(root)
