"""`obsflow setup --broker-api URL`: the way Kubernetes sets a site up (no rabbitmqctl on the broker's host).

A private RabbitMQ node with its management API loads the site's definitions through `POST /api/definitions`;
afterwards every principal's user exists with its permissions, a service may publish what it produces and nothing
else, and a second setup changes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from yarl import URL

from shared import credentials
from shared.errors import ConfigurationError
from shared.provision.broker import BrokerApi
from shared.provision.site import DATABASE_PRINCIPALS, setup_site
from shared.settings import PeerSettings, Settings
from tests.infra import backends
from tests.private_servers import PrivateRabbitMQ
from tests.security.test_least_privilege import _minted, _publish_refused

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def managed_broker() -> Iterator[PrivateRabbitMQ]:
    """A private node with the management API on a port of its own."""
    broker = PrivateRabbitMQ(management=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def site(managed_broker: PrivateRabbitMQ, tmp_path: Path) -> Iterator[Settings]:
    name = "m" + uuid.uuid4().hex[:10]
    settings = Settings(
        site=name, bus={"prefix": name}, data_dir=tmp_path,
        database_url=str(URL(backends().database_url).with_user(None)),
        amqp_url=f"amqp://127.0.0.1:{managed_broker.port}/",
    )
    yield settings
    asyncio.run(_drop_roles(settings))


async def _drop_roles(settings: Settings) -> None:
    conn = await asyncpg.connect(backends().database_url)
    try:
        for principal in DATABASE_PRINCIPALS:
            role = credentials.database_role(settings, principal)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{role}" CASCADE')
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()


def _users(broker: PrivateRabbitMQ) -> str:
    return broker._ctl("list_users").stdout.decode()


async def test_setup_through_the_management_api(managed_broker: PrivateRabbitMQ, site: Settings) -> None:
    api = BrokerApi(managed_broker.management_url, "guest", "guest")
    await setup_site(site, admin_database_url=backends().database_url, broker_api=api)
    users = await asyncio.to_thread(_users, managed_broker)
    for principal in ("ingest", "catalog", "transfer", "scheduler", "monitor", "instrument", "reader"):
        assert credentials.broker_user(site, principal) in users
    ingest = credentials.amqp_url(site, "ingest")
    events = f"{site.bus.prefix}.events"
    assert await _publish_refused(ingest, events, *_minted(site.site, "ok.uvh5")) == ""
    assert "ACCESS_REFUSED" in await _publish_refused(
        credentials.amqp_url(site, "scheduler"), events, *_minted(site.site, "forged.uvh5"))
    connection = await aio_pika.connect(ingest)  # the topology came with the definitions
    async with connection, connection.channel() as channel:
        await channel.declare_queue(f"{site.bus.prefix}.ingest.announced", passive=True)
        await channel.declare_queue(f"{site.bus.prefix}.log", passive=True)
    # Idempotent: the same passwords, the same users.
    await setup_site(site, admin_database_url=backends().database_url, broker_api=api)
    assert await asyncio.to_thread(_users, managed_broker) == users


async def test_peer_links_through_the_management_api(
    managed_broker: PrivateRabbitMQ, site: Settings, tmp_path: Path
) -> None:
    """The shovels are set, and a peer no longer declared loses its shovel and queue, through the API too."""
    api = BrokerApi(managed_broker.management_url, "guest", "guest")
    other = f"{site.bus.prefix}-peer"  # the "peer": another exchange on this node, reached as guest
    (tmp_path / "peer-password").write_text("guest\n")
    peer = PeerSettings(name="nrao", amqp_url=f"amqp://guest@127.0.0.1:{managed_broker.port}/", bus_prefix=other,
                        amqp_password_file=tmp_path / "peer-password")
    linked = site.model_copy(update={"peers": [peer]})
    connection = await aio_pika.connect(managed_broker.amqp_url)
    async with connection, connection.channel() as channel:
        exchange = await channel.declare_exchange(f"{other}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        arrived = await channel.declare_queue(exclusive=True)
        await arrived.bind(exchange, routing_key="#")
        report = await setup_site(linked, admin_database_url=backends().database_url, broker_api=api)
        assert report.shovels == (f"{site.bus.prefix}-to-nrao",)
        types = await asyncio.to_thread(managed_broker._ctl, "list_queues", "name", "type")
        assert f"{site.bus.prefix}.to.nrao\tquorum" in types.stdout.decode()
        key, message = _minted(site.site, "crossing.uvh5")
        assert await _publish_refused(credentials.amqp_url(site, "ingest"), f"{site.bus.prefix}.events", key,
                                      message) == ""
        delivered = await _get_within(arrived, 60)
        assert delivered.routing_key == key and delivered.user_id == "guest"
        assert delivered.message_id == message.message_id
        again = await setup_site(site, admin_database_url=backends().database_url, broker_api=api)
        assert again.removed_shovels == (f"{site.bus.prefix}-to-nrao",)
        shovels = await asyncio.to_thread(managed_broker._ctl, "list_parameters")
        assert f"{site.bus.prefix}-to-nrao" not in shovels.stdout.decode()
        queues = await asyncio.to_thread(managed_broker._ctl, "list_queues", "name")
        assert f"{site.bus.prefix}.to.nrao" not in queues.stdout.decode()


async def _get_within(queue: aio_pika.abc.AbstractQueue, timeout_s: float) -> aio_pika.abc.AbstractIncomingMessage:
    """The first message on `queue`, waiting for it up to `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                return message
            await asyncio.sleep(0.1)


async def test_wrong_administrator_credentials_are_a_clear_error(
    managed_broker: PrivateRabbitMQ, site: Settings
) -> None:
    api = BrokerApi(managed_broker.management_url, "guest", "not-the-password")
    with pytest.raises(ConfigurationError, match=r"management API .* refused the definitions \(401\)"):
        await setup_site(site, admin_database_url=backends().database_url, broker_api=api)


def test_the_broker_api_credentials_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "broker-api"
    secret.write_text("admin:s3cret\n")
    api = BrokerApi.from_file("http://rabbitmq:15672", secret)
    assert (api.user, api.password) == ("admin", "s3cret") and "s3cret" not in repr(api)
    secret.write_text("no-colon-here")
    with pytest.raises(ConfigurationError, match="user:password"):
        BrokerApi.from_file("http://rabbitmq:15672", secret)
