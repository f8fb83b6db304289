"""The faults of issue 10 on a standing order's burst to a peer: the source's transfer process SIGKILLed mid-batch,
the destination's transfer and ingest processes SIGKILLed mid-burst (the ingest mid-PUT), the broker both sites use
restarted mid-burst. Afterwards the invariants of test_replication hold: one verified instance of each file at the
peer (one instance.created each), the source records them all, every transfer done as derived, none delivered twice.

The sites' schemas are on a PostgreSQL cluster of the session's own (`private_postgres`): a site of three services,
two of them processes of their own, holds some fifty connections, and the machine's cluster is shared.

Files are 1 MiB and the source sends at most `bandwidth_mbps` to the peer, so batches are really in flight when the
fault comes (the broker test sends at a quarter of it: the bytes must still be moving while the broker is down).
`OBSFLOW_TEST_FAULT_FILES` (default 24) and `OBSFLOW_TEST_FAULT_MBPS` (default 40) make a longer version (e.g. 120
files); `OBSFLOW_TEST_FAULT_DEADLINE_S` (default 240) bounds each wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from shared.settings import Settings
from tests.conftest import wait_for
from tests.private_servers import PrivatePostgres, PrivateRabbitMQ
from tests.sites.harness import Sites, SiteUnderTest, linked_sites
from tests.sites.links_setup import links_of, shovels_running
from tests.sites.test_replication import create_order, names, transfers_listed

pytestmark = pytest.mark.timeout(600)
FILES = int(os.environ.get("OBSFLOW_TEST_FAULT_FILES", "24"))
MBPS = float(os.environ.get("OBSFLOW_TEST_FAULT_MBPS", "40"))
SIZE = 1024 * 1024
DEADLINE_S = float(os.environ.get("OBSFLOW_TEST_FAULT_DEADLINE_S", "240"))
POLL_S = 0.3
# A killed destination ingest takes seconds to come back: enough attempts that its files wait for it, not fail.
TRANSFER = {"max_attempts": 30, "http_concurrency_initial": 4, "http_concurrency_max": 4}
OPEN_BATCHES = "SELECT count(*) FROM batches WHERE ended_at IS NULL"
AT_NRAO = "SELECT count(*) FROM instances"


@pytest.fixture(scope="module")
def managed_broker() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of this module's own, with the management API (the shovels are set through it): restarted
    by a test, so never the machine's."""
    broker = PrivateRabbitMQ(management=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def base(settings: Settings, private_postgres: PrivatePostgres) -> Settings:
    """The test's settings, on the session's own PostgreSQL cluster (its schemas go with it at the end)."""
    return settings.model_copy(update={"database_url": private_postgres.database_url})


@pytest.fixture
async def private_amqp(managed_broker: PrivateRabbitMQ) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(managed_broker.amqp_url)
    async with connection:
        yield connection


@contextlib.asynccontextmanager
async def broker_down(broker: PrivateRabbitMQ) -> AsyncIterator[None]:
    """The node stopped (its clients see CONNECTION_FORCED) for the block, started again on its port after it."""
    await asyncio.to_thread(broker.stop)
    try:
        yield
    finally:
        await asyncio.to_thread(broker.start)


async def at_least(site: SiteUnderTest, service: str, sql: str, wanted: int) -> bool:
    return int(await site.fetchval(service, sql) or 0) >= wanted


async def burst(karoo: SiteUnderTest, channel: aio_pika.abc.AbstractChannel) -> None:
    await create_order(karoo, {"search": {"file_type": {"is": "uvh5"}}, "destination": "nrao"})
    await karoo.announce(channel, names(FILES), SIZE)


async def mid_burst(karoo: SiteUnderTest, nrao: SiteUnderTest) -> None:
    """Until some files are at nrao and karoo has batches in flight (the moment a fault is injected)."""
    await wait_for(lambda: at_least(nrao, "ingest", AT_NRAO, max(2, FILES // 6)), DEADLINE_S, POLL_S)
    await wait_for(lambda: at_least(karoo, "transfer", OPEN_BATCHES, 1), DEADLINE_S, POLL_S)


async def assert_replicated(sites: Sites) -> None:
    """The invariants of test_replication, once the burst has settled."""
    karoo, nrao = sites["karoo"], sites["nrao"]
    remote = "SELECT count(*) FROM instances WHERE site = 'nrao'"
    await wait_for(lambda: at_least(nrao, "ingest", AT_NRAO, FILES), DEADLINE_S, POLL_S)
    await wait_for(lambda: at_least(karoo, "catalog", remote, FILES), DEADLINE_S, POLL_S)

    async def all_done() -> bool:
        return len((await transfers_listed(karoo, "/api/v1/transfers?state=done&limit=1000"))["transfers"]) >= FILES

    await wait_for(all_done, DEADLINE_S, POLL_S)
    # Exactly one verified instance of each file at nrao, each announced by one instance.created.
    assert await nrao.fetchval("ingest", "SELECT count(DISTINCT file_name) FROM instances") == FILES
    assert await nrao.fetchval("ingest", AT_NRAO) == FILES
    assert await nrao.fetchval("ingest", "SELECT count(*) FROM outbox WHERE event_type = 'instance.created'") == FILES
    # The source records every remote instance; its transfers are all done, none stuck, none delivered twice.
    assert await karoo.fetchval("catalog", remote) == FILES
    done = await transfers_listed(karoo, "/api/v1/transfers?state=done&limit=1000")
    assert len(done["transfers"]) == FILES
    assert (await transfers_listed(karoo, "/api/v1/transfers/stuck"))["transfers"] == []
    assert await karoo.fetchval(
        "transfer", "SELECT count(*) FROM (SELECT file_name FROM attempts WHERE outcome = 'delivered'"
        " GROUP BY file_name HAVING count(*) > 1) twice") == 0
    assert await karoo.fetchval("transfer", OPEN_BATCHES) == 0


def logged(site: SiteUnderTest, service: str, event: str) -> list[dict[str, Any]]:
    """The lines of `event` in the log of the site's `service` process (JSON lines)."""
    lines = (json.loads(line) for line in site.log(service).read_text().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def uploading(site: SiteUnderTest) -> bool:
    """Whether the site's ingest is receiving bytes: an upload staged in its store, not yet committed (the burst
    must not have ended meanwhile)."""
    staging, store = site.settings.stores[0].root / "staging", site.settings.stores[0].root / "main"
    if store.is_dir() and len(list(store.iterdir())) >= FILES:
        raise AssertionError(f"the burst ended at {site.name} before an upload was seen in flight")
    return staging.is_dir() and any(staging.iterdir())


def sites_of(settings: Settings, tmp_path: Path, mbps: float = MBPS, **options: Any) -> Any:
    return linked_sites(settings, tmp_path, ["karoo", "nrao"], transfer=TRANSFER,
                        peer_options={"bandwidth_mbps": mbps}, **options)


async def test_the_source_transfer_killed_mid_batch_resumes_its_batches(
    base: Settings, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path,
) -> None:
    async with sites_of(base, tmp_path) as sites:
        karoo, nrao = sites["karoo"], sites["nrao"]
        await nrao.start()
        await karoo.start("ingest", "catalog")
        await karoo.start_process("transfer")
        await burst(karoo, await amqp.channel())
        await mid_burst(karoo, nrao)

        await karoo.kill("transfer")
        open_at_kill = await karoo.fetchval("transfer",
                                            "SELECT array_agg(batch_id) FROM batches WHERE ended_at IS NULL")
        assert open_at_kill, "the kill came between batches: nothing in flight to resume"
        assert await nrao.fetchval("ingest", AT_NRAO) < FILES  # the kill came before the end of the burst
        await karoo.start_process("transfer")

        # The batches the killed process left open are sent again under their ids, and ended.
        await wait_for(lambda: logged(karoo, "transfer", "transfer_batches_resumed"), DEADLINE_S, POLL_S)
        resumed = logged(karoo, "transfer", "transfer_batches_resumed")
        assert [line["batches"] for line in resumed] == [len(open_at_kill)]
        ended = "SELECT count(*) FROM batches WHERE batch_id = ANY($1::text[]) AND ended_at IS NOT NULL"

        async def resumed_ended() -> bool:
            return int(await karoo.fetchval("transfer", ended, open_at_kill)) == len(open_at_kill)

        await wait_for(resumed_ended, DEADLINE_S, POLL_S)
        await assert_replicated(sites)


async def test_the_destination_transfer_and_ingest_killed_mid_burst(
    base: Settings, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path,
) -> None:
    async with sites_of(base, tmp_path, MBPS / 2) as sites:
        karoo, nrao = sites["karoo"], sites["nrao"]
        await nrao.start_process("ingest")
        await nrao.start("catalog")
        await nrao.start_process("transfer")
        await karoo.start()
        await burst(karoo, await amqp.channel())
        await mid_burst(karoo, nrao)

        # nrao's ingest receives the bytes: it is killed mid-PUT (an upload staged, karoo's pushes in flight into it).
        # nrao's transfer only consumes events here (it hears of every instance): it is killed too.
        await wait_for(lambda: uploading(nrao), DEADLINE_S, 0.05)
        await nrao.kill("ingest")
        await nrao.kill("transfer")
        assert await nrao.fetchval("ingest", AT_NRAO) < FILES
        # While nrao's ingest is down, karoo's pushes fail and wait for their retry.
        await wait_for(lambda: at_least(karoo, "transfer", "SELECT count(*) FROM attempts WHERE outcome = 'failed'",
                                        1), DEADLINE_S, POLL_S)
        await nrao.start_process("ingest")
        await nrao.start_process("transfer")

        await assert_replicated(sites)
        # nrao's transfer, killed mid-stream, resumed its projection: every instance at nrao known once.
        await wait_for(lambda: at_least(nrao, "transfer", "SELECT count(*) FROM instances WHERE site = 'nrao'",
                                        FILES), DEADLINE_S, POLL_S)
        assert await nrao.fetchval("transfer", "SELECT count(*) FROM instances WHERE site = 'nrao'") == FILES


async def test_a_broker_restart_mid_burst(
    base: Settings, managed_broker: PrivateRabbitMQ, private_amqp: aio_pika.abc.AbstractConnection,
    tmp_path: Path,
) -> None:
    on_private = base.model_copy(update={"amqp_url": managed_broker.amqp_url})
    # Slower: the bytes (HTTP) go on while the broker is down, and must still be going when it stops.
    async with sites_of(on_private, tmp_path, MBPS / 4, broker=managed_broker) as sites:
        karoo, nrao = sites["karoo"], sites["nrao"]
        await nrao.start()
        await karoo.start()
        await burst(karoo, await private_amqp.channel())
        await mid_burst(karoo, nrao)

        # The node both sites use stops (its clients see CONNECTION_FORCED) and stays down until nrao has received
        # a replica meanwhile (the bytes go by HTTP), its instance.created kept in the outbox for the broker; then it
        # starts again on its port.
        during_outage = ("SELECT count(*) FROM outbox WHERE event_type = 'instance.created' AND created_at >= $1"
                         " AND published_at IS NULL")
        async with broker_down(managed_broker):
            down_at = await nrao.fetchval("ingest", "SELECT now()")
            assert await nrao.fetchval("ingest", AT_NRAO) < FILES, "the burst ended before the broker was down"

            async def received_while_down() -> bool:
                return int(await nrao.fetchval("ingest", during_outage, down_at)) > 0

            await wait_for(received_while_down, DEADLINE_S, POLL_S)
        links = [link for site in (karoo, nrao) for link in links_of(site.settings)]
        await wait_for(lambda: shovels_running(links, managed_broker), DEADLINE_S, POLL_S)

        await assert_replicated(sites)
        # Metadata crossed the restarted shovels too: nrao's catalog knows every file of karoo's.
        await wait_for(lambda: at_least(nrao, "catalog", "SELECT count(*) FROM files WHERE origin_site = 'karoo'",
                                        FILES), DEADLINE_S, POLL_S)
