"""Each service connects as itself with least privilege; the broker and the consumers refuse what it may not say.

One site is set up for the module with `obsflow setup`'s code (real roles on PostgreSQL, real users, permissions,
topic permissions and topology on RabbitMQ), services run as their own principals, and every refusal is the real
server's.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import pytest
from yarl import URL

from services.catalog.service import SPEC as CATALOG
from services.ingest.service import SPEC as INGEST
from shared import credentials
from shared.bus import publish_event
from shared.bus.messages import event_message
from shared.events import encode_event, new_event
from shared.events.types import FileMinted, ObservationAnnounced, SessionClosed
from shared.provision.grants import broker_grants
from shared.provision.site import DATABASE_PRINCIPALS, setup_site
from shared.runner import ServiceRunner
from shared.settings import Settings, StoreSettings
from tests.conftest import wait_for
from tests.infra import LOCAL_AMQP, backends, free_port_block

pytestmark = pytest.mark.timeout(300)


def _without_user(url: str) -> str:
    return str(URL(url).with_user(None))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A site set up as `obsflow setup` does it: every service with its own role and broker user."""
    b = backends()
    if b.amqp_url != LOCAL_AMQP or shutil.which("rabbitmqctl") is None:
        pytest.fail("these tests create broker users with rabbitmqctl on the local broker (run `make services`)")
    site = "s" + uuid.uuid4().hex[:10]
    root = tmp_path_factory.mktemp("secure")
    settings = Settings(
        site=site, database_url=_without_user(b.database_url), amqp_url=_without_user(b.amqp_url),
        bus={"prefix": site}, data_dir=root, log_format="json", shutdown_grace_s=5.0,
        auth_secret=f"secret-{site}-{'x' * 32}",
        stores=[StoreSettings(name="main", root=root / "store")],
        services={"ingest": {"source_roots": [str(root / "correlator")]}},
    )
    (root / "store").mkdir()
    (root / "correlator").mkdir()
    asyncio.run(setup_site(settings, admin_database_url=b.database_url))
    try:
        yield settings
    finally:
        asyncio.run(_tear_down(settings, b.database_url))


async def _tear_down(settings: Settings, admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        for principal in DATABASE_PRINCIPALS:
            role = credentials.database_role(settings, principal)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{role}" CASCADE')
        for principal in DATABASE_PRINCIPALS:
            role = credentials.database_role(settings, principal)
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()
    for grant in broker_grants(settings.site, settings.bus.prefix):
        _rabbitmqctl("delete_user", credentials.broker_user(settings, grant.principal))
    connection = await aio_pika.connect(backends().amqp_url)
    async with connection, connection.channel() as channel:
        for name in (f"{settings.bus.prefix}.{n}" for n in ("log", "dead-letters", "ingest.announced")):
            await channel.queue_delete(name)
        for name in (f"{settings.bus.prefix}.{n}" for n in ("events", "dead", "control")):
            await channel.exchange_delete(name)


def _rabbitmqctl(*args: str) -> str:
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def _with_port(settings: Settings) -> Settings:
    return settings.model_copy(update={"http_base_port": free_port_block()})


def _minted(site: str, name: str, producer: str = "ingest") -> tuple[str, aio_pika.Message]:
    event = new_event(FileMinted(
        name=name, size=1, checksum="xxh3-128:" + "0" * 32, file_type="uvh5", origin_site=site, uploader="mallory",
        created_at=datetime.now(UTC),
    ), site=site, producer=producer)
    return event.routing_key, event_message(str(event.event_id), event.type, encode_event(event))


async def _publish_refused(url: str, exchange: str, routing_key: str, message: aio_pika.Message) -> str:
    """Publish with confirms; the broker's refusal (it closes the channel), or "" if it took the message."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            target = channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
            await target.publish(message, routing_key=routing_key)
        except aio_pika.exceptions.AMQPError as e:
            return str(e)
    return ""


def test_setup_is_idempotent_and_keeps_the_passwords(secure: Settings) -> None:
    files = sorted(credentials.credentials_dir(secure).iterdir())
    before = {p.name: p.read_text() for p in files}
    asyncio.run(setup_site(secure, admin_database_url=backends().database_url))
    assert {p.name: p.read_text() for p in files} == before
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    assert credentials.credentials_dir(secure).stat().st_mode & 0o777 == 0o700


async def test_services_connect_as_themselves_and_their_events_flow(secure: Settings) -> None:
    ingest = ServiceRunner(INGEST, _with_port(secure))
    catalog = ServiceRunner(CATALOG, _with_port(secure))
    await ingest.start()
    await catalog.start()
    try:
        assert ingest.ctx is not None and catalog.ctx is not None
        assert await ingest.ctx.pool.fetchval("SELECT current_user") == f"{secure.site}_ingest"
        assert await catalog.ctx.pool.fetchval("SELECT current_user") == f"{secure.site}_catalog"
        users = await asyncio.to_thread(_rabbitmqctl, "list_connections", "user")
        assert f"{secure.site}-ingest" in users and f"{secure.site}-catalog" in users
        # The instrument announces with its own user; ingest mints; the catalog accepts ingest's event.
        source = Path(secure.data_dir) / "correlator" / f"zen.{uuid.uuid4().hex[:6]}.uvh5"
        source.write_bytes(b"visibilities" * 100)
        instrument_url = credentials.amqp_url(secure, "instrument")
        connection = await aio_pika.connect(instrument_url)
        async with connection, connection.channel() as channel:
            exchange = await channel.get_exchange(f"{secure.bus.prefix}.events", ensure=False)
            announced = new_event(ObservationAnnounced(path=str(source), file_type="uvh5"), site=secure.site,
                                  producer="correlator")
            await publish_event(exchange, announced, user_id=f"{secure.site}-instrument")
        await wait_for(lambda: catalog.ctx.pool.fetchval(  # type: ignore[union-attr]
            "SELECT count(*) FROM files WHERE name = $1", source.name), timeout_s=60)
        assert await catalog.ctx.pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    finally:
        await catalog.stop()
        await ingest.stop()


async def test_the_broker_refuses_what_a_user_may_not_publish_or_declare(secure: Settings) -> None:
    site, events = secure.site, f"{secure.bus.prefix}.events"
    ingest, instrument = credentials.amqp_url(secure, "ingest"), credentials.amqp_url(secure, "instrument")
    reader = credentials.amqp_url(secure, "reader")
    closed = new_event(SessionClosed(session_id="s", start_jd=1.0, end_jd=2.0, file_names=[]), site=site,
                       producer="ingest")
    closed_message = event_message(str(closed.event_id), closed.type, encode_event(closed))
    refusals = {
        "ingest closes a session": await _publish_refused(ingest, events, closed.routing_key, closed_message),
        "ingest mints for another site": await _publish_refused(ingest, events, *_minted("nrao", "x.uvh5")),
        "ingest writes straight into the log": await _publish_refused(
            ingest, "", f"{secure.bus.prefix}.log", _minted(site, "y.uvh5")[1]),
        "the instrument mints": await _publish_refused(instrument, events, *_minted(site, "z.uvh5")),
        "a reader publishes": await _publish_refused(reader, events, *_minted(site, "w.uvh5")),
    }
    assert all("ACCESS_REFUSED" in why for why in refusals.values()), refusals
    # A user id is the connection's own or the broker refuses the message: nobody speaks as another user.
    announced = new_event(ObservationAnnounced(path="/x", file_type="uvh5"), site=site, producer="correlator")
    as_ingest = event_message(str(announced.event_id), announced.type, encode_event(announced),
                              user_id=f"{site}-ingest")
    assert "PRECONDITION_FAILED" in await _publish_refused(instrument, events, announced.routing_key, as_ingest)
    connection = await aio_pika.connect(ingest)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.declare_queue(f"{secure.bus.prefix}.ingest.mine", durable=True)
    # What ingest may say, it can.
    assert await _publish_refused(ingest, events, *_minted(site, "u.uvh5", producer="ingest")) == ""


async def test_an_event_from_a_user_that_is_not_its_producer_is_dead_lettered(secure: Settings) -> None:
    catalog = ServiceRunner(CATALOG, _with_port(secure))
    await catalog.start()
    try:
        assert catalog.ctx is not None
        consumer = catalog.parts.stream_consumers[0]
        # The scheduler may write drain markers into the log through the control exchange: not events of ingest.
        _key, message = _minted(secure.site, "through-control.uvh5")
        message.user_id = f"{secure.site}-scheduler"
        assert await _publish_refused(credentials.amqp_url(secure, "scheduler"), f"{secure.bus.prefix}.control",
                                      f"{secure.bus.prefix}.log", message) == ""
        # An administrator's account (no obsflow producer) publishing on the events exchange.
        assert await _publish_refused(backends().amqp_url, f"{secure.bus.prefix}.events",
                                      *_minted(secure.site, "by-admin.uvh5")) == ""
        await consumer.drain(60)
        names = await catalog.ctx.pool.fetch("SELECT name FROM files WHERE name IN ('through-control.uvh5', "
                                             "'by-admin.uvh5')")
        assert names == []
        reasons = [r["reason"] for r in await catalog.ctx.pool.fetch("SELECT reason FROM dead_letters")]
        assert any(f"this message came from {secure.site}-scheduler" in r for r in reasons), reasons
        assert any("this message came from an unnamed broker user" in r for r in reasons), reasons
    finally:
        await catalog.stop()


async def test_a_service_role_owns_its_schema_and_nothing_else(secure: Settings) -> None:
    conn = await asyncpg.connect(credentials.database_url(secure, "catalog"))
    site = secure.site
    try:
        await conn.execute(f'CREATE TABLE IF NOT EXISTS "{site}_catalog".mine (x int)')  # its own schema: yes
        for statement in (
            f'SELECT * FROM "{site}_ingest".schema_migrations',  # another service's schema
            f'CREATE SCHEMA "{site}_extra"',
            "CREATE TABLE public.planted (x int)",
            f'INSERT INTO "{site}_accounts".accounts (name, password_hash, role) VALUES (\'m\', \'h\', \'admin\')',
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        assert await conn.fetchval(f'SELECT count(*) FROM "{site}_accounts".accounts') >= 0  # reads accounts
    finally:
        await conn.close()


def test_without_setup_a_service_says_how_to_get_credentials(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)  # no user in the default URLs: nobody's account is assumed
    assert credentials.own_credentials(settings)
    for system_call in (credentials.amqp_url, credentials.database_url):
        with pytest.raises(Exception, match="run `obsflow setup`"):
            system_call(settings, "ingest")
