"""Fixtures shared by every test: real PostgreSQL and RabbitMQ, unique names per test, torn down after."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aio_pika
import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from shared.bus.topology import Topology
from shared.db import apply_migrations, create_pool
from shared.metrics import BusMetrics
from shared.settings import Settings
from tests.infra import backends, delete_broker_names, drop_site_schemas

pytest_plugins = ["tests.private_servers"]  # private_rabbitmq, private_postgres: servers a test may restart

_NAMES_USED: set[str] = set()


@pytest.fixture
def unique() -> str:
    """A short name no other test uses (its exchanges, streams and queues are swept at the end of the session)."""
    name = "t" + uuid.uuid4().hex[:10]
    _NAMES_USED.add(name)
    return name


@pytest.fixture(scope="session", autouse=True)
def _sweep_test_topologies() -> Iterator[None]:
    """Delete whatever the session's tests declared on the broker and did not remove (services declare their own)."""
    yield
    if _NAMES_USED:
        asyncio.run(delete_broker_names(_NAMES_USED))


@pytest.fixture
def settings(unique: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of a private site: its own schemas (prefix), its own exchange, stream and queues, and its own data
    directory (nothing a test does lands in the machine's ~/.local/share/obsflow)."""
    b = backends()
    return Settings(
        site=unique, database_url=b.database_url, amqp_url=b.amqp_url, bus={"prefix": unique}, log_format="json",
        shutdown_grace_s=5.0, auth_secret=f"test-secret-of-{unique}-{uuid.uuid4().hex}",
        data_dir=tmp_path_factory.mktemp(f"{unique}-data"),
    )


@pytest.fixture
async def drop_schemas(settings: Settings) -> AsyncIterator[None]:
    """Drop every schema of the test's site afterwards."""
    yield
    await drop_site_schemas(settings.database_url, settings.schema_prefix or settings.site)


@pytest.fixture
async def pool(settings: Settings, drop_schemas: None) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the schema `<site>_test` with the bus tables."""
    schema = settings.schema_for("test")
    p = await create_pool(settings.database_url, schema)
    await apply_migrations(p, schema, ["shared.bus.migrations"])
    yield p
    await p.close()


@pytest.fixture
async def amqp(settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A robust broker connection."""
    connection = await aio_pika.connect_robust(settings.amqp_url)
    yield connection
    await connection.close()


@pytest.fixture
async def topology(settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[Topology]:
    """The test site's topology, declared, and deleted afterwards."""
    topo = Topology(prefix=settings.bus.prefix, stream_max_bytes=200 * 1024**2, stream_segment_bytes=10 * 1024**2)
    async with amqp.channel() as channel:
        await topo.declare(channel)
    yield topo
    async with amqp.channel() as channel:
        await topo.delete(channel)


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 20.0, poll_s: float = 0.05
) -> None:
    """Wait until `predicate` (plain or async) is true, failing the test after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await asyncio.sleep(poll_s)


@pytest.fixture
def bus_metrics() -> BusMetrics:
    """Bus metrics on a registry of the test's own."""
    return BusMetrics(CollectorRegistry())
