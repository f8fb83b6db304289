"""Bad input between sites: a byte damaged on the way (the destination refuses, the retry succeeds), a peer that
refuses this site's token, a peer that answers 500 (waited out, its files' attempts not used up), a file the peer
refuses for good (failed at once, transfer.failed), a destination whose store is full or read-only. Each shows in
`obsflow transfers stuck` with the peer's reason and its next retry; nothing is recorded at the destination that is
not verified; fixed at the peer, it goes through."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shared.settings import Settings
from tests.conftest import wait_for
from tests.infra import free_port_block
from tests.sites.harness import Sites, SiteUnderTest, linked_sites
from tests.sites.test_replication import count_at_least, create_order, names, transfers_listed

pytestmark = [pytest.mark.usefixtures("drop_schemas"), pytest.mark.timeout(300)]
DEADLINE_S = 120.0
ORDER = {"search": {"file_type": {"is": "uvh5"}}, "destination": "nrao"}


async def stuck_reasons(site: SiteUnderTest) -> list[str]:
    return [t["last_error"] or "" for t in (await transfers_listed(site, "/api/v1/transfers/stuck"))["transfers"]]


def stuck_with(site: SiteUnderTest, words: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(words in reason for reason in await stuck_reasons(site))
    return check


@contextlib.asynccontextmanager
async def replicating(settings: Settings, tmp_path: Path, **options: Any) -> AsyncIterator[Sites]:
    """karoo and nrao running, an order at karoo for nrao."""
    async with linked_sites(settings, tmp_path, ["karoo", "nrao"], **options) as sites:
        await sites["nrao"].start()
        await sites["karoo"].start()
        await create_order(sites["karoo"], ORDER)
        yield sites


async def test_a_byte_damaged_on_the_way_is_refused_and_sent_again(settings: Settings, amqp, tmp_path: Path) -> None:
    async with replicating(settings, tmp_path) as sites:
        karoo, nrao = sites["karoo"], sites["nrao"]
        (name,) = names(1)
        # The file's content is "karoo <name>\n" repeated; one copy of it is damaged on its way to nrao's ingest.
        line = f"karoo {name}\n".encode()
        ingest_proxy = next(p for p in sites.link("karoo", "nrao").proxies if p.target[1] == nrao.settings.http_port(
            "ingest"))
        ingest_proxy.corrupt_once(line, line.replace(b"karoo", b"kar0o"))
        await karoo.announce(await amqp.channel(), [name], 4096)
        await wait_for(lambda: count_at_least(nrao, "ingest", "SELECT count(*) FROM instances", 1), DEADLINE_S)
        assert ingest_proxy.corrupted == 1
        reasons = await karoo.fetchval("transfer", "SELECT array_agg(reason) FROM attempts WHERE outcome = 'failed'")
        assert len(reasons) == 1 and "checksum_mismatch" in reasons[0], reasons
        assert await karoo.fetchval("transfer", "SELECT count(*) FROM attempts WHERE outcome = 'delivered'") == 1
        # nrao refused the damaged bytes (an ingest.rejected), then recorded the good ones once.
        assert await nrao.fetchval("ingest", "SELECT count(*) FROM outbox WHERE event_type = 'ingest.rejected'") == 1
        assert await nrao.fetchval("ingest", "SELECT count(*) FROM outbox WHERE event_type = 'instance.created'") == 1


async def test_a_peer_refusing_the_token_is_stuck_with_the_reason_until_it_is_fixed(
    settings: Settings, amqp, tmp_path: Path
) -> None:
    async with replicating(settings, tmp_path) as sites:
        karoo, nrao = sites["karoo"], sites["nrao"]
        token_file = karoo.settings.peer("nrao").token_file
        assert token_file is not None
        good = token_file.read_text()
        token_file.write_text(karoo.token("karoo-peer"))  # signed by karoo's own secret: nrao refuses it
        await karoo.announce(await amqp.channel(), names(3), 2048)
        await wait_for(stuck_with(karoo, "401"), DEADLINE_S)
        stuck = (await transfers_listed(karoo, "/api/v1/transfers/stuck"))["transfers"]
        assert stuck and all(t["next_attempt_at"] and t["attempts"] >= 1 for t in stuck)
        assert await nrao.fetchval("ingest", "SELECT count(*) FROM instances") == 0
        token_file.write_text(good)  # the operator hands over the right token: read at the next attempt
        await wait_for(lambda: count_at_least(nrao, "ingest", "SELECT count(*) FROM instances", 3), DEADLINE_S)
        await wait_for(lambda: _nothing_stuck(karoo), DEADLINE_S)


async def _nothing_stuck(site: SiteUnderTest) -> bool:
    return not await stuck_reasons(site)


@dataclass
class BrokenPeer:
    """A server where a peer's ingest should be that answers every request with a 500 (a broken proxy, a bug)."""

    url: str = ""
    requests: int = 0


@contextlib.asynccontextmanager
async def broken_peer() -> AsyncIterator[BrokenPeer]:
    peer = BrokenPeer()

    async def fail(_request: web.Request) -> web.Response:
        peer.requests += 1
        return web.Response(status=500, text="internal error of a broken peer")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fail)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port_block(1)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    peer.url = f"http://127.0.0.1:{port}"
    try:
        yield peer
    finally:
        await runner.cleanup()


async def test_a_peer_answering_500_is_waited_out_with_backoff_using_up_no_attempt(
    settings: Settings, amqp, tmp_path: Path
) -> None:
    async with broken_peer() as peer:
        overrides = {("karoo", "nrao"): {"http_url": peer.url}}
        async with replicating(settings, tmp_path, peer_overrides=overrides, transfer={"max_attempts": 2}) as sites:
            karoo = sites["karoo"]
            await karoo.announce(await amqp.channel(), names(2), 1024)
            await wait_for(stuck_with(karoo, "500"), DEADLINE_S)
            first = peer.requests

            async def probed(times: int) -> bool:
                return peer.requests >= first + times

            # The lane probes with one file at a time, waiting 0.5 s, 1 s, 2 s (the test's cap) between probes: a
            # broken peer is not hammered, and the files' attempts are not used up (it is the peer's fault).
            started = asyncio.get_running_loop().time()
            await wait_for(lambda: probed(3), DEADLINE_S)
            assert asyncio.get_running_loop().time() - started >= 0.5 + 1.0
            rows = await karoo.runners["transfer"].ctx.pool.fetch(  # type: ignore[union-attr]
                "SELECT attempts, last_error FROM transfers")
            assert len(rows) == 2 and all(r["attempts"] == 0 and "500" in r["last_error"] for r in rows)
            listed = await transfers_listed(karoo, "/api/v1/transfers?state=queued")
            assert len(listed["transfers"]) == 2  # waiting for the peer, not failed
            assert await karoo.fetchval(
                "transfer", "SELECT count(*) FROM outbox WHERE event_type = 'transfer.failed'") == 0


async def test_a_file_the_peer_refuses_for_good_fails_once_and_says_so(settings: Settings, amqp,
                                                                       tmp_path: Path) -> None:
    async with replicating(settings, tmp_path) as sites:
        karoo, nrao = sites["karoo"], sites["nrao"]
        (name,) = names(1)
        # nrao already has another file of this name (its own upload): karoo's copy can never be recorded there.
        (nrao.incoming / name).write_bytes(b"nrao's own content")
        await nrao.announce_path(await amqp.channel(), nrao.incoming / name)
        await wait_for(lambda: count_at_least(nrao, "ingest", "SELECT count(*) FROM files", 1), DEADLINE_S)
        await karoo.announce(await amqp.channel(), [name], 1024)

        async def failed() -> bool:
            return len((await transfers_listed(karoo, "/api/v1/transfers?state=failed"))["transfers"]) == 1

        await wait_for(failed, DEADLINE_S)
        (stuck,) = (await transfers_listed(karoo, "/api/v1/transfers/stuck"))["transfers"]
        assert "name_conflict" in stuck["last_error"] and stuck["attempts"] == 1
        assert stuck["next_attempt_at"] is None  # never: refused for good
        bodies = await karoo.runners["transfer"].ctx.pool.fetch(  # type: ignore[union-attr]
            "SELECT body FROM outbox WHERE event_type = 'transfer.failed'")
        (event,) = [json.loads(b["body"])["payload"] for b in bodies]
        assert event["permanent"] and event["file_name"] == name and "name_conflict" in event["reason"]


@pytest.mark.parametrize("store", [{"capacity_bytes": 2048}, {"state": "read-only"}], ids=["full", "read-only"])
async def test_a_destination_store_full_or_read_only_refuses_and_nothing_is_recorded(
    settings: Settings, amqp, tmp_path: Path, store: dict[str, Any]
) -> None:
    async with replicating(settings, tmp_path, stores={"nrao": store}) as sites:
        karoo, nrao = sites["karoo"], sites["nrao"]
        await karoo.announce(await amqp.channel(), names(2), 4096)
        await wait_for(stuck_with(karoo, "no_store"), DEADLINE_S)
        assert await nrao.fetchval("ingest", "SELECT count(*) FROM instances") == 0
        assert await nrao.fetchval("ingest", "SELECT count(*) FROM outbox WHERE event_type = 'instance.created'") == 0
