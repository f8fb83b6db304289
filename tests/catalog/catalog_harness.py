"""Running the catalog in-process against the real PostgreSQL and RabbitMQ, and HERA-like events to feed it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg

from services.catalog.service import SPEC
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.bus import Topology, publish_event
from shared.events import Event, new_event
from shared.events.types import FileMinted, InstanceCreated, InstanceDeleted
from shared.runner import ServiceRunner
from shared.settings import Settings
from tests.infra import free_port_block

NIGHT_1 = 2459122.30000
NIGHT_2 = 2459122.80000
JD_STEP = 0.00018
TABLES = {
    "files": "name", "instances": "site, store, path", "instance_tombstones": "site, store, path",
    "observations": "observation_id", "sessions": "session_id",
}


def catalog_settings(settings: Settings, **options: Any) -> Settings:
    """The test site's settings with free HTTP ports and these `[services.catalog]` options."""
    return settings.model_copy(update={"http_base_port": free_port_block(), "services": {"catalog": options}})


def token(settings: Settings, role: Role) -> str:
    """A bearer token of `role` for the test site."""
    return issue_token(site_secret(settings), Principal(f"test-{role.label}", role), 3600)


def minted(jd: float, *, site: str = "karoo", kind: str = "sum") -> Event:
    """file.minted of the HERA file of the observation starting at `jd`."""
    obs = f"zen.{jd:.5f}"
    return new_event(
        FileMinted(
            name=f"{obs}.{kind}.uvh5", size=1000, checksum=f"xxh3-128:{uuid.uuid4().hex}", file_type="uvh5",
            observation_id=obs, start_jd=jd, duration_s=15.5, origin_site=site, uploader="correlator",
            created_at=datetime(2020, 9, 30, tzinfo=UTC),
        ),
        site=site, producer="ingest",
    )


def night(start: float, count: int) -> list[float]:
    """Start times of `count` successive observations."""
    return [round(start + i * JD_STEP, 5) for i in range(count)]


def instance_created(name: str, site: str, path: str) -> Event:
    """instance.created of a copy of `name` at `site`."""
    payload = InstanceCreated(file_name=name, site=site, store="main", path=path, size=1000,
                              checksum="xxh3-128:00", verified_at=datetime.now(UTC))
    return new_event(payload, site=site, producer="transfer")


def instance_deleted(name: str, site: str, path: str) -> Event:
    """instance.deleted of that copy."""
    payload = InstanceDeleted(file_name=name, site=site, store="main", path=path, reason="test")
    return new_event(payload, site=site, producer="transfer")


async def publish(amqp: aio_pika.abc.AbstractRobustConnection, settings: Settings, events: list[Event]) -> None:
    """Publish events on the site's exchange, in order."""
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(f"{settings.bus.prefix}.events")
        for event in events:
            await publish_event(exchange, event)


@asynccontextmanager
async def running_catalog(settings: Settings, *, http: bool = True) -> AsyncIterator[ServiceRunner]:
    """The catalog service started in this process; stopped, and its topology deleted, afterwards."""
    runner = ServiceRunner(SPEC, settings, http=http)
    try:
        await runner.start()
        await runner.parts.stream_consumers[0].wait_ready()
        yield runner
    finally:
        await runner.stop()


async def delete_topology(settings: Settings) -> None:
    """Delete the test site's exchange, stream and queues."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        async with connection.channel() as channel:
            await Topology(prefix=settings.bus.prefix).delete(channel)
    finally:
        await connection.close()


async def dump_tables(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the catalog's projection tables, in key order."""
    return {t: [tuple(r) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY {key}")] for t, key in TABLES.items()}
