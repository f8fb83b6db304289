"""Two sites set up by `obsflow setup`'s code, each declaring the other: the link users' least privilege, end to end.

Each site's set-up creates the inbound user of its peer (`<peer>-peer`) and the shovel of its own outbound queue,
logging in at the peer as the user the peer created for it. A link whose password is not handed over yet waits
while its events queue up. The peer user may bring only its own site's forwardable events: the broker refuses the
rest, and the consumers dead-letter what the broker cannot tell (an event of a third site under the peer's key).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import pytest
from yarl import URL

from services.catalog.service import SPEC as CATALOG
from shared import credentials
from shared.bus.messages import event_message
from shared.bus.peers import peer_user
from shared.events import Event, encode_event, new_event
from shared.events.types import FileMinted, ObservationAnnounced
from shared.provision.grants import broker_grants
from shared.provision.shovels import clear_shovel, list_shovels, queue_messages, shovel_states
from shared.provision.site import DATABASE_PRINCIPALS, setup_site
from shared.runner import ServiceRunner
from shared.settings import PeerSettings, Settings, StoreSettings
from tests.conftest import wait_for
from tests.infra import LOCAL_AMQP, backends, free_port_block

pytestmark = pytest.mark.timeout(300)
VHOST = "/"


def _without_user(url: str) -> str:
    return str(URL(url).with_user(None))


def _site(name: str, peer: str, root: Path, peer_root: Path) -> Settings:
    b = backends()
    (root / "store").mkdir(parents=True, exist_ok=True)
    return Settings(
        site=name, database_url=_without_user(b.database_url), amqp_url=_without_user(b.amqp_url),
        bus={"prefix": name}, data_dir=root, log_format="json", shutdown_grace_s=5.0,
        auth_secret=f"secret-{name}-{'x' * 32}", stores=[StoreSettings(name="main", root=root / "store")],
        http_base_port=free_port_block(),
        peers=[PeerSettings(
            name=peer, amqp_url=f"amqp://{peer_user(name)}@127.0.0.1:5672/", bus_prefix=peer,
            # The password the peer's set-up generated for us, as its operator would hand it over.
            amqp_password_file=peer_root / "credentials" / f"{peer_user(name)}.amqp-password",
        )],
    )


@pytest.fixture
async def two_sites(tmp_path: Path) -> AsyncIterator[tuple[Settings, Settings]]:
    if backends().amqp_url != LOCAL_AMQP or shutil.which("rabbitmqctl") is None:
        pytest.fail("these tests create broker users and shovels with rabbitmqctl on the local broker")
    tag = uuid.uuid4().hex[:8]
    a_name, b_name = f"pa{tag}", f"pb{tag}"
    a = _site(a_name, b_name, tmp_path / "a", tmp_path / "b")
    b = _site(b_name, a_name, tmp_path / "b", tmp_path / "a")
    try:
        yield a, b
    finally:
        for s in (a, b):
            await _tear_down(s)


async def _tear_down(settings: Settings) -> None:
    for name in await list_shovels(VHOST):
        if name.startswith(f"{settings.bus.prefix}-to-"):
            await clear_shovel(VHOST, name)
    admin = await asyncpg.connect(backends().database_url)
    try:
        roles = [credentials.database_role(settings, p) for p in DATABASE_PRINCIPALS]
        for role in roles:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{role}" CASCADE')
        for role in roles:
            if await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await admin.execute(f'DROP OWNED BY "{role}"')
                await admin.execute(f'DROP ROLE "{role}"')
    finally:
        await admin.close()
    users = [credentials.broker_user(settings, g.principal) for g in broker_grants(settings.site, settings.bus.prefix)]
    existing = set(_rabbitmqctl("list_users", "--formatter", "json").split('"'))
    for user in [*users, *(peer_user(p.name) for p in settings.peers)]:
        if user in existing:
            _rabbitmqctl("delete_user", user)
    connection = await aio_pika.connect(backends().amqp_url)
    async with connection, connection.channel() as channel:
        names = [*(f"{settings.bus.prefix}.{n}" for n in ("log", "dead-letters", "ingest.announced")),
                 *(f"{settings.bus.prefix}.to.{p.name}" for p in settings.peers)]
        for name in names:
            await channel.queue_delete(name)
        for name in (f"{settings.bus.prefix}.{n}" for n in ("events", "dead", "control")):
            await channel.exchange_delete(name)


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True).stdout


def _minted(site: str, name: str) -> Event:
    return new_event(FileMinted(name=name, size=1, checksum="xxh3-128:" + "0" * 32, file_type="uvh5",
                                origin_site=site, uploader="u", created_at=datetime.now(UTC)),
                     site=site, producer="ingest")


async def _publish_as(url: str, exchange: str, routing_key: str, message: aio_pika.Message) -> str:
    """Publish with confirms; the broker's refusal, or "" if it took the message."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            target = await channel.get_exchange(exchange, ensure=False)
            await target.publish(message, routing_key=routing_key)
        except aio_pika.exceptions.AMQPError as e:
            return str(e)
    return ""


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


def _message(event: Event, user: str | None = None) -> aio_pika.Message:
    return event_message(str(event.event_id), event.type, encode_event(event), user_id=user)


async def test_peers_set_up_by_obsflow_setup_exchange_their_events_as_least_privileged_link_users(two_sites) -> None:
    a, b = two_sites
    admin_db = backends().database_url
    first = await setup_site(a, admin_database_url=admin_db)
    assert first.waiting_peers == (b.site,) and first.shovels == ()  # b has not generated our password yet
    assert peer_user(b.site) in first.broker_users
    # An event of a, published while its link waits, queues up for b.
    early = _minted(a.site, f"early-{uuid.uuid4().hex[:6]}.uvh5")
    assert await _publish_as(credentials.amqp_url(a, "ingest"), f"{a.bus.prefix}.events", early.routing_key,
                             _message(early, f"{a.site}-ingest")) == ""

    async def queued() -> bool:  # the broker's counts lag a confirm by a moment
        return await queue_messages(VHOST, f"{a.bus.prefix}.to.{b.site}") == 1

    await wait_for(queued, timeout_s=30, poll_s=0.3)
    assert (await setup_site(b, admin_database_url=admin_db)).shovels == (f"{b.bus.prefix}-to-{a.site}",)
    assert (await setup_site(a, admin_database_url=admin_db)).shovels == (f"{a.bus.prefix}-to-{b.site}",)

    async def both_running() -> bool:
        states = await shovel_states(VHOST)
        return all(states.get(f"{s.bus.prefix}-to-{p}") == "running" for s, p in ((a, b.site), (b, a.site)))

    await wait_for(both_running, timeout_s=60, poll_s=0.3)
    catalog = ServiceRunner(CATALOG, b)  # b's catalog, as b's own least-privileged user, checking publishers
    await catalog.start()
    try:
        assert catalog.ctx is not None and catalog.ctx.verify_publishers
        pool = catalog.ctx.pool
        later = _minted(a.site, f"later-{uuid.uuid4().hex[:6]}.uvh5")
        assert await _publish_as(credentials.amqp_url(a, "ingest"), f"{a.bus.prefix}.events", later.routing_key,
                                 _message(later, f"{a.site}-ingest")) == ""
        names = {early.payload.name, later.payload.name}  # type: ignore[attr-defined]

        async def arrived() -> bool:
            rows = await pool.fetch("SELECT name FROM files WHERE origin_site = $1", a.site)
            return {r["name"] for r in rows} == names

        await wait_for(arrived, timeout_s=60)
        await _refusals_at(b, a, pool, catalog)
    finally:
        await catalog.stop()
    # a no longer declares b: its set-up removes its own shovel and queue, and nothing of b's.
    again = await setup_site(a.model_copy(update={"peers": []}), admin_database_url=admin_db)
    assert again.removed_shovels == (f"{a.bus.prefix}-to-{b.site}",)
    assert again.revoked_peer_users == (peer_user(b.site),)  # b's link may no longer write here
    topics = _rabbitmqctl("list_user_topic_permissions", peer_user(b.site))
    assert f"{a.bus.prefix}.events" not in topics
    assert f"{a.bus.prefix}" not in _rabbitmqctl("list_user_permissions", peer_user(b.site))
    shovels = await list_shovels(VHOST)
    assert f"{a.bus.prefix}-to-{b.site}" not in shovels and f"{b.bus.prefix}-to-{a.site}" in shovels
    assert await queue_messages(VHOST, f"{a.bus.prefix}.to.{b.site}") is None


async def _refusals_at(b: Settings, a: Settings, pool: asyncpg.Pool, catalog: ServiceRunner) -> None:
    """What a's link user may not do at b: the broker refuses it, or b's consumers set it aside."""
    password = await asyncio.to_thread(Path(str(a.peers[0].amqp_password_file)).read_text)
    password = password.strip()
    as_link = str(URL(b.amqp_url).with_user(peer_user(a.site)).with_password(password))
    user, events = peer_user(a.site), f"{b.bus.prefix}.events"
    announced = new_event(ObservationAnnounced(path="/data/x.uvh5", file_type="uvh5"), site=a.site,
                          producer="correlator")
    theirs = _minted(b.site, "b-file.uvh5")
    refusals = {
        "an announcement": await _publish_as(as_link, events, announced.routing_key, _message(announced, user)),
        "an event of b itself": await _publish_as(as_link, events, theirs.routing_key, _message(theirs, user)),
        "into b's control exchange": await _publish_as(as_link, f"{b.bus.prefix}.control", f"{b.bus.prefix}.log",
                                                       _message(_minted(a.site, "m.uvh5"), user)),
    }
    assert all("ACCESS_REFUSED" in why for why in refusals.values()), refusals
    connection = await aio_pika.connect(as_link)
    async with connection:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await (await connection.channel()).declare_queue(f"{b.bus.prefix}.mine", durable=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            queue = await (await connection.channel()).get_queue(f"{b.bus.prefix}.log", ensure=False)
            await queue.consume(_ignore, arguments={"x-stream-offset": "first"})
    # Under a's own routing key, a third site's event: the broker cannot tell, b's catalog refuses it.
    third = _minted("ska", "third.uvh5")
    assert await _publish_as(as_link, events, f"{a.site}.file.minted.uvh5", _message(third, user)) == ""
    await catalog.parts.stream_consumers[0].drain(60)
    assert await pool.fetchval("SELECT count(*) FROM files WHERE name = 'third.uvh5'") == 0
    reasons = [r["reason"] for r in await pool.fetch("SELECT reason FROM dead_letters")]
    assert any("a peer sends only its own events" in r and user in r for r in reasons), reasons
