"""Metadata between two sites on the machine's broker, through RabbitMQ's own store-and-forward.

karoo's own forwardable events cross to nrao by a dynamic shovel that goes through a link proxy the test cuts for
real (reset, then blackhole); while it is down they wait in `<prefix>.to.nrao`, and once restored they all arrive,
each once in nrao's catalog. nrao's own events come back only through nrao's shovel; karoo's announcements and a
third site's events never cross. Both sites' real catalogs run; a name minted at both with other contents is a
conflict at each.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import pytest

from services.catalog.service import SPEC as CATALOG
from shared.bus import Topology, publish_event
from shared.bus.peers import PeerLink, shovel_uri
from shared.events import Event, new_event
from shared.events.types import FileMinted, ObservationAnnounced
from shared.provision.shovels import clear_shovel, queue_messages, set_shovels, shovel_states
from shared.runner import ServiceRunner
from shared.settings import PeerSettings, Settings
from tests.catalog.catalog_harness import NIGHT_1, minted
from tests.conftest import wait_for
from tests.infra import drop_site_schemas
from tests.sites.link import CutMode, Link, link_to

pytestmark = pytest.mark.timeout(420)
VHOST = "/"
AMQP_PORT = 5672


@dataclass
class Observer:
    """Every message of a site's events exchange matching `pattern`: (routing key, message id, user id)."""

    seen: list[tuple[str, str | None, str | None]]

    def count(self, key_prefix: str) -> int:
        return sum(1 for key, _, _ in self.seen if key.startswith(key_prefix))

    def ids(self) -> collections.Counter[str | None]:
        return collections.Counter(mid for _, mid, _ in self.seen)


async def observe(channel: aio_pika.abc.AbstractChannel, prefix: str, pattern: str) -> Observer:
    observer = Observer([])
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(f"{prefix}.events", routing_key=pattern)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        observer.seen.append((message.routing_key or "", message.message_id, message.user_id))
        await message.ack()

    await queue.consume(on_message)
    return observer


def site_settings(settings: Settings, site: str, peer: str, unique: str) -> Settings:
    bus = settings.bus.model_copy(update={"prefix": f"{unique}-{site}"})
    return settings.model_copy(update={
        "site": site, "schema_prefix": f"{unique}_{site[0]}", "bus": bus,
        "peers": [PeerSettings(name=peer, bus_prefix=f"{unique}-{peer}")],
        "services": {"catalog": {"session_sweep_interval_s": 3600}},
    })


def link_between(source: Settings, peer: Settings, port: int) -> PeerLink:
    """The shovel from `source` to `peer`'s events exchange, logging in at 127.0.0.1:`port` as guest."""
    dest = shovel_uri(f"amqp://guest@127.0.0.1:{port}/", "guest", heartbeat_s=2)
    return PeerLink(source.site, source.bus.prefix, VHOST, peer.site, peer.bus.prefix, dest, reconnect_delay_s=1)


async def wait_running(links: list[PeerLink], timeout_s: float = 60) -> None:
    async def running() -> bool:
        states = await shovel_states(VHOST)
        return all(states.get(link.shovel) == "running" for link in links)

    await wait_for(running, timeout_s=timeout_s, poll_s=0.3)


async def count_where(runner: ServiceRunner, sql: str, *args: object) -> int:
    assert runner.ctx is not None
    return int(await runner.ctx.pool.fetchval(sql, *args))


def files_from(runner: ServiceRunner, site: str, expected: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await count_where(runner, "SELECT count(*) FROM files WHERE origin_site = $1", site) >= expected
    return check


def batch(site: str, count: int, start: float) -> list[Event]:
    return [minted(round(start + i * 0.0002, 5), site=site) for i in range(count)]


@pytest.fixture
async def two_sites(settings: Settings, unique: str) -> AsyncIterator[tuple[Settings, Settings]]:
    karoo = site_settings(settings, "karoo", "nrao", unique)
    nrao = site_settings(settings, "nrao", "karoo", unique)
    try:
        yield karoo, nrao
    finally:
        for s in (karoo, nrao):
            await drop_site_schemas(s.database_url, s.schema_prefix or s.site)


async def test_events_cross_wait_out_a_cut_link_and_arrive_once(two_sites, amqp) -> None:
    karoo, nrao = two_sites
    runners = [ServiceRunner(CATALOG, s, http=False) for s in (karoo, nrao)]
    k_catalog, n_catalog = runners
    links: list[PeerLink] = []
    channel = await amqp.channel()
    try:
        for runner in runners:
            await runner.start()  # declares each site's topology (the shared guest account may configure)
        async with link_to(AMQP_PORT) as proxy:
            to_nrao, to_karoo = link_between(karoo, nrao, proxy.port), link_between(nrao, karoo, AMQP_PORT)
            links = [to_nrao, to_karoo]
            for link in links:
                await link.declare_queue(channel)
            await set_shovels(links)
            await wait_running(links)
            at_nrao = await observe(channel, nrao.bus.prefix, "karoo.#")
            at_karoo = await observe(channel, karoo.bus.prefix, "#")
            await _first_crossing(channel, karoo, nrao, n_catalog, k_catalog, at_nrao, at_karoo)
            expected = 11
            modes: tuple[CutMode, ...] = ("reset", "blackhole")
            for mode in modes:
                expected = await _cut_and_restore(channel, proxy, mode, karoo, to_nrao, n_catalog, expected)
            await _conflict_at_both(channel, proxy, karoo, nrao, k_catalog, n_catalog, at_nrao)
            # Every karoo event arrived at nrao with its id, and once on karoo's own bus: none came back.
            assert at_nrao.count("karoo.file.minted") >= expected
            assert {u for _, _, u in at_nrao.seen} == {"guest"}
            assert all(n == 1 for mid, n in at_karoo.ids().items() if mid is not None), at_karoo.ids().most_common(3)
            for runner in runners:
                assert await count_where(runner, "SELECT count(*) FROM dead_letters") == 0
    finally:
        for link in links:
            await clear_shovel(VHOST, link.shovel)
        for runner in runners:
            await runner.stop()
        for link in links:
            await channel.queue_delete(link.queue)
        for s in (karoo, nrao):
            await Topology(prefix=s.bus.prefix).delete(channel)
        await channel.close()


async def _publish(channel: aio_pika.abc.AbstractChannel, settings: Settings, events: list[Event]) -> None:
    exchange = await channel.get_exchange(f"{settings.bus.prefix}.events", ensure=False)
    for event in events:
        await publish_event(exchange, event)


async def _first_crossing(channel: aio_pika.abc.AbstractChannel, karoo: Settings, nrao: Settings,
                          n_catalog: ServiceRunner, k_catalog: ServiceRunner, at_nrao: Observer,
                          at_karoo: Observer) -> None:
    announced = new_event(ObservationAnnounced(path="/karoo/only/zen.x.uvh5", file_type="uvh5"), site="karoo",
                          producer="correlator")
    third = minted(NIGHT_1 + 3, site="ska")  # a third site's event on karoo's bus: karoo does not pass it on
    first = batch("karoo", 10, NIGHT_1)
    sentinel = minted(NIGHT_1 + 1, site="karoo")  # after it arrives, anything sent before would have, too
    await _publish(channel, karoo, [announced, third, *first, sentinel])
    await _publish(channel, nrao, [minted(NIGHT_1 + 2, site="nrao")])
    await wait_for(files_from(n_catalog, "karoo", 11), timeout_s=60)
    await wait_for(files_from(k_catalog, "nrao", 1), timeout_s=60)
    sent = {str(e.event_id) for e in [*first, sentinel]}
    await wait_for(lambda: sent <= set(at_nrao.ids()), timeout_s=30)
    assert at_nrao.count("karoo.observation") == 0 and at_nrao.count("karoo.file.minted") == 11
    for runner in (n_catalog, k_catalog):
        await runner.parts.stream_consumers[0].drain()
    assert await count_where(n_catalog, "SELECT count(*) FROM files WHERE origin_site = 'ska'") == 0
    # nrao catalogues karoo's files but groups only its own observations (karoo's catalog groups karoo's).
    assert await count_where(n_catalog, "SELECT count(*) FROM observations") == 1
    assert await count_where(k_catalog, "SELECT count(*) FROM observations") == 11 + 1  # + ska's, not a peer
    await wait_for(lambda: at_karoo.count("nrao.file.minted") == 1, timeout_s=30)


async def _cut_and_restore(channel: aio_pika.abc.AbstractChannel, proxy: Link, mode: CutMode, karoo: Settings,
                           to_nrao: PeerLink, n_catalog: ServiceRunner, before: int) -> int:
    """Cut the link, publish 200 at karoo, see them wait, restore, see each arrive once; the new total."""
    assert proxy.open_connections >= 1  # the shovel's connection to nrao
    proxy.cut(mode)
    # A reset drops the shovel's connection at once; a blackhole keeps it open, silent, until heartbeats give up.
    assert (proxy.open_connections == 0) if mode == "reset" else (proxy.open_connections >= 1)
    events = batch("karoo", 200, NIGHT_1 + 10 + before)
    await _publish(channel, karoo, events)

    async def all_waiting() -> bool:
        return await queue_messages(VHOST, to_nrao.queue) == 200

    await wait_for(all_waiting, timeout_s=60, poll_s=0.3)
    assert await count_where(n_catalog, "SELECT count(*) FROM files WHERE origin_site = 'karoo'") == before
    proxy.restore()
    await wait_for(files_from(n_catalog, "karoo", before + 200), timeout_s=120, poll_s=0.2)

    async def drained() -> bool:
        return await queue_messages(VHOST, to_nrao.queue) == 0

    await wait_for(drained, timeout_s=60, poll_s=0.3)
    await n_catalog.parts.stream_consumers[0].drain()
    names = [e.payload.name for e in events]  # type: ignore[attr-defined]
    assert await count_where(n_catalog, "SELECT count(*) FROM files WHERE name = ANY($1::text[])", names) == 200
    assert await count_where(n_catalog, "SELECT count(*) FROM files WHERE origin_site = 'karoo'") == before + 200
    return before + 200


async def _conflict_at_both(channel: aio_pika.abc.AbstractChannel, proxy: Link, karoo: Settings, nrao: Settings,
                            k_catalog: ServiceRunner, n_catalog: ServiceRunner, at_nrao: Observer) -> None:
    name = f"zen.conflict.{uuid.uuid4().hex[:8]}.uvh5"

    def mint(site: str, checksum: str) -> Event:
        event = minted(NIGHT_1 + 50, site=site)
        payload = event.payload
        assert isinstance(payload, FileMinted)
        return new_event(payload.model_copy(update={"name": name, "checksum": checksum}), site=site,
                         producer="ingest")

    # Each site mints first at home, so each keeps its own: karoo's link is down while nrao mints.
    proxy.cut("reset")
    for site, runner, digit in ((karoo, k_catalog, "b"), (nrao, n_catalog, "a")):
        await _publish(channel, site, [mint(site.site, "xxh3-128:" + digit * 32)])
        await wait_for(lambda r=runner: count_where(r, "SELECT count(*) FROM files WHERE name = $1", name), 30)
    proxy.restore()

    for runner, own, other in ((k_catalog, "karoo", "nrao"), (n_catalog, "nrao", "karoo")):
        async def noticed(r: ServiceRunner = runner) -> bool:
            return await count_where(r, "SELECT count(*) FROM conflicts WHERE name = $1", name) == 1

        await wait_for(noticed, timeout_s=60)
        assert runner.ctx is not None
        row = await runner.ctx.pool.fetchrow("SELECT kept_site, other_site FROM conflicts WHERE name = $1", name)
        assert tuple(row) == (own, other)
        assert await count_where(runner, "SELECT count(*) FROM outbox WHERE event_type = 'file.conflicted'"
                                 " AND convert_from(body, 'UTF8')::jsonb #>> '{payload,name}' = $1", name) == 1
    # karoo's file.conflicted is one of its forwardable events: nrao hears of it too.
    await wait_for(lambda: at_nrao.count("karoo.file.conflicted") == 1, timeout_s=60)
