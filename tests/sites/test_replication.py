"""A standing order replicates a burst of observations to a peer across a link that is cut in the middle of it;
afterwards every file has exactly one verified instance at the peer, the source records it, nothing was sent twice.

`OBSFLOW_TEST_BURST` (default 300 here; the issue's 1,000 with `OBSFLOW_TEST_BURST=1000`) and `OBSFLOW_TEST_CUT_S`
(how long the link stays cut, default 10 s; minutes with e.g. 180) make the long version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.settings import Settings
from tests.conftest import wait_for
from tests.sites.harness import SiteUnderTest, linked_sites

pytestmark = [pytest.mark.usefixtures("drop_schemas"), pytest.mark.timeout(900)]
BURST = int(os.environ.get("OBSFLOW_TEST_BURST", "300"))
CUT_S = float(os.environ.get("OBSFLOW_TEST_CUT_S", "10"))
SIZE = 4096
DEADLINE_S = 300.0


def names(count: int, start: float = 2459122.3) -> list[str]:
    return [f"zen.{start + i * 0.00018:.5f}.sum.uvh5" for i in range(count)]


async def create_order(site: SiteUnderTest, body: dict[str, object]) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {site.token()}"}
    async with aiohttp.ClientSession(headers=headers) as http, \
            http.post(f"{site.url('transfer')}/api/v1/orders", json=body) as response:
        assert response.status == 201, await response.text()
        return dict(await response.json())


async def transfers_listed(site: SiteUnderTest, path: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {site.token()}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.get(f"{site.url('transfer')}{path}") as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def count_at_least(site: SiteUnderTest, service: str, sql: str, wanted: int) -> bool:
    return int(await site.fetchval(service, sql)) >= wanted


async def test_a_burst_crosses_a_cut_link_once_each(settings: Settings, amqp, tmp_path: Path) -> None:
    # Three attempts a file, retried after 0.5 s, 1 s, 2 s: a cut of 10 s would use them up many times over if an
    # unreachable peer counted against the files. It must not: a link down for a night loses nothing.
    async with linked_sites(settings, tmp_path, ["karoo", "nrao"], transfer={"max_attempts": 3}) as sites:
        karoo, nrao = sites["karoo"], sites["nrao"]
        await nrao.start()
        await karoo.start()
        await create_order(karoo, {"search": {"file_type": {"is": "uvh5"}}, "destination": "nrao"})
        channel = await amqp.channel()
        await karoo.announce(channel, names(BURST), SIZE)

        delivered_at_nrao = "SELECT count(*) FROM instances"
        await wait_for(lambda: count_at_least(nrao, "ingest", delivered_at_nrao, BURST // 3), DEADLINE_S)
        sites.link("karoo", "nrao").cut("reset")
        during = int(await nrao.fetchval("ingest", delivered_at_nrao))
        await wait_for(lambda: count_at_least(karoo, "ingest", "SELECT count(*) FROM files", BURST), DEADLINE_S)
        # While the link is down the rest waits: announcements are minted at karoo, nothing reaches nrao.
        await wait_for(lambda: _failed_once(karoo), DEADLINE_S)
        assert int(await nrao.fetchval("ingest", delivered_at_nrao)) <= during + 4 * 32  # at most what was in flight
        await _wait(CUT_S)
        sites.link("karoo", "nrao").restore()

        await wait_for(lambda: count_at_least(nrao, "ingest", delivered_at_nrao, BURST), DEADLINE_S)
        remote = "SELECT count(*) FROM instances WHERE site = 'nrao'"
        await wait_for(lambda: count_at_least(karoo, "catalog", remote, BURST), DEADLINE_S)
        await wait_for(lambda: count_at_least(nrao, "catalog", "SELECT count(*) FROM files", BURST), DEADLINE_S)

        # Exactly one verified instance of each file at nrao, each announced by one instance.created.
        assert await nrao.fetchval("ingest", "SELECT count(DISTINCT file_name) FROM instances") == BURST
        assert await nrao.fetchval("ingest", delivered_at_nrao) == BURST
        assert await nrao.fetchval(
            "ingest", "SELECT count(*) FROM outbox WHERE event_type = 'instance.created'") == BURST
        assert await nrao.fetchval("ingest", "SELECT count(*) FROM outbox WHERE event_type = 'file.minted'") == 0
        # The source records every remote instance, and its transfers are all done, none delivered twice.
        assert await karoo.fetchval("catalog", remote) == BURST
        # Done is derived: the destination said so, or its instance.created came back (a response lost in the cut).
        done = await transfers_listed(karoo, "/api/v1/transfers?state=done&limit=1000")
        assert len(done["transfers"]) == BURST
        assert (await transfers_listed(karoo, "/api/v1/transfers/stuck"))["transfers"] == []
        assert await karoo.fetchval(
            "transfer", "SELECT count(*) FROM (SELECT file_name FROM attempts WHERE outcome = 'delivered'"
            " GROUP BY file_name HAVING count(*) > 1) twice") == 0
        assert await karoo.fetchval("transfer", "SELECT count(*) FROM outbox WHERE event_type = 'transfer.failed'") == 0
        # The figures say so too (bounded labels: peers and outcomes, never file names).
        async with aiohttp.ClientSession() as http, http.get(f"{karoo.url('transfer')}/metrics") as response:
            metrics = await response.text()
        assert f"obsflow_transfers_created_total {float(BURST)}" in metrics
        assert 'obsflow_transfer_files_total{outcome="delivered",peer="nrao"}' in metrics
        assert 'obsflow_transfer_concurrency{peer="nrao"}' in metrics
        # Metadata crossed too: nrao's catalog knows karoo's files with karoo as their origin.
        assert await nrao.fetchval("catalog", "SELECT count(*) FROM files WHERE origin_site = 'karoo'") == BURST


async def _failed_once(site: SiteUnderTest) -> bool:
    return int(await site.fetchval("transfer", "SELECT count(*) FROM attempts WHERE outcome = 'failed'")) > 0


async def _wait(seconds: float) -> None:
    """The cut lasts this long on purpose (the thing under test), not a wait for a condition."""
    import asyncio

    await asyncio.sleep(seconds)
