"""Transfer states derived from facts (rows written through the repository, on the real PostgreSQL): queued, in
flight, done by delivered_at, done by an instance at the destination, failed after max attempts; the stuck listing,
filters and pages; and the same through the HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest

from services.transfer import repository
from services.transfer.repository import Page, Result
from services.transfer.routes import PREFIX, BadQuery, decode_cursor, encode_cursor
from services.transfer.triggers import transfer_handlers
from shared.auth import Role
from shared.bus.stream_consumer import Batched
from shared.db import apply_migrations, create_pool
from shared.events import new_event
from shared.events.types import InstanceCreated
from shared.settings import Settings
from tests.catalog.catalog_harness import delete_topology, token
from tests.transfer.harness import PEER, Api, running_transfer, transfer_settings

MAX_ATTEMPTS = 3
SOON_S = 300.0


@pytest.fixture
async def transfer_pool(settings: Settings, drop_schemas: None) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test site's transfer schema, migrated as the service migrates it."""
    schema = settings.schema_for("transfer")
    pool = await create_pool(settings.database_url, schema)
    await apply_migrations(pool, schema, ["shared.bus.migrations", "services.transfer.migrations"])
    yield pool
    await pool.close()


async def _fail(conn: asyncpg.Connection, batch: str, name: str, destination: str, times: int) -> None:
    for i in range(times):
        await repository.start_batch(conn, f"{batch}-{i}", destination, "http", [(name, destination)])
        failed = Result(name, destination, "failed", f"timed out ({i + 1})")
        await repository.finish_batch(conn, f"{batch}-{i}", [failed], retry_delays_s=[SOON_S])


async def _instance(conn: asyncpg.Connection, name: str, site: str, path: str, checksum: str = "xxh3-128:00") -> None:
    """An instance.created of `site`, applied by the service's own stream handler."""
    created = InstanceCreated(file_name=name, site=site, store="main", path=path, size=5, checksum=checksum,
                              verified_at=datetime.now(UTC))
    handler = transfer_handlers("karoo")[InstanceCreated.event_type]
    assert isinstance(handler, Batched)
    await handler.apply(conn, [new_event(created, site=site, producer="ingest")])


async def _facts(conn: asyncpg.Connection) -> None:
    """One transfer in each state, for nrao; one for penn."""
    names = ("a.queued", "b.in_flight", "c.delivered", "d.held", "e.failed", "f.retrying", "g.recovered", "h.conflict")
    await repository.want_transfers(conn, [(name, PEER, "order-1", 0) for name in names])
    await repository.want_transfers(conn, [("a.queued", "penn", "order-2", 7)])
    await repository.start_batch(conn, "batch-b", PEER, "http", [("b.in_flight", PEER)])
    await repository.start_batch(conn, "batch-c", PEER, "http", [("c.delivered", PEER)])
    await repository.finish_batch(conn, "batch-c", [Result("c.delivered", PEER, "delivered", bytes=5,
                                                           reached_destination=True)], retry_delays_s=[0.0])
    # A copy at the destination heard of (instance.created of nrao), with the content of ours: done without any
    # attempt of ours. One of another content there (nrao minted that name itself: a conflict) does not count.
    for name in ("a.queued", "d.held", "h.conflict"):
        await _instance(conn, name, "karoo", f"/store/{name}")
    await _instance(conn, "d.held", PEER, "/d.held")
    await _instance(conn, "a.queued", "penn", "/a")
    await _instance(conn, "h.conflict", PEER, "/h.conflict", checksum="xxh3-128:ff")
    await _fail(conn, "batch-e", "e.failed", PEER, MAX_ATTEMPTS)
    await _fail(conn, "batch-f", "f.retrying", PEER, MAX_ATTEMPTS - 1)
    await _fail(conn, "batch-g", "g.recovered", PEER, MAX_ATTEMPTS)
    await repository.start_batch(conn, "batch-g-last", PEER, "http", [("g.recovered", PEER)])
    await repository.finish_batch(conn, "batch-g-last", [Result("g.recovered", PEER, "already",
                                                                reached_destination=True)], retry_delays_s=[0.0])


def _states(rows: list[dict]) -> dict[tuple[str, str], str]:
    return {(r["file_name"], r["destination"]): r["state"] for r in rows}


async def test_states_are_derived_from_the_facts(transfer_pool: asyncpg.Pool) -> None:
    async with transfer_pool.acquire() as conn:
        await _facts(conn)
    rows = await repository.list_transfers(transfer_pool, MAX_ATTEMPTS, Page(limit=100))
    assert _states(rows) == {
        ("a.queued", PEER): "queued", ("a.queued", "penn"): "done", ("b.in_flight", PEER): "in_flight",
        ("c.delivered", PEER): "done", ("d.held", PEER): "done", ("e.failed", PEER): "failed",
        ("f.retrying", PEER): "queued", ("g.recovered", PEER): "done", ("h.conflict", PEER): "queued",
    }
    by_key = {(r["file_name"], r["destination"]): r for r in rows}
    failed = by_key[("e.failed", PEER)]
    assert failed["attempts"] == MAX_ATTEMPTS and failed["last_error"] == f"timed out ({MAX_ATTEMPTS})"
    waits = (failed["next_attempt_at"] - failed["last_attempt_at"]).total_seconds()
    assert SOON_S - 5 <= waits <= SOON_S + 5 and failed["delivered_at"] is None
    assert by_key[("c.delivered", PEER)]["delivered_at"] is not None
    assert by_key[("d.held", PEER)]["delivered_at"] is None and by_key[("d.held", PEER)]["attempts"] == 0
    assert by_key[("a.queued", "penn")]["priority"] == 7 and by_key[("a.queued", PEER)]["priority"] == 0
    # With a higher bound the same facts are not failed yet.
    assert _states(await repository.list_transfers(transfer_pool, MAX_ATTEMPTS + 1, Page()))[
        ("e.failed", PEER)] == "queued"
    for state, expected in (("queued", {"a.queued", "f.retrying", "h.conflict"}), ("in_flight", {"b.in_flight"}),
                            ("failed", {"e.failed"}), ("done", {"a.queued", "c.delivered", "d.held", "g.recovered"})):
        listed = await repository.list_transfers(transfer_pool, MAX_ATTEMPTS, Page(state=state))
        assert {r["file_name"] for r in listed} == expected, state
    to_penn = await repository.list_transfers(transfer_pool, MAX_ATTEMPTS, Page(destination="penn"))
    assert [(r["file_name"], r["state"]) for r in to_penn] == [("a.queued", "done")]


async def test_stuck_lists_what_was_tried_and_has_not_arrived(transfer_pool: asyncpg.Pool) -> None:
    async with transfer_pool.acquire() as conn:
        await _facts(conn)
        await repository.start_batch(conn, "batch-f-now", PEER, "http", [("f.retrying", PEER)])  # retried now
    stuck = await repository.list_transfers(transfer_pool, MAX_ATTEMPTS, Page(), stuck=True)
    # An attempt counts from its start: a batch that never ends (the process dies in it) still uses one up.
    assert [(r["file_name"], r["state"], r["attempts"]) for r in stuck] == [
        ("e.failed", "failed", MAX_ATTEMPTS), ("f.retrying", "in_flight", MAX_ATTEMPTS)]
    assert stuck[1]["last_error"] == f"timed out ({MAX_ATTEMPTS - 1})"
    assert await repository.list_transfers(transfer_pool, MAX_ATTEMPTS, Page(destination="penn"), stuck=True) == []


async def test_an_order_joins_a_transfer_once_and_raises_its_priority(transfer_pool: asyncpg.Pool) -> None:
    async with transfer_pool.acquire() as conn:
        for order_id, priority in (("order-1", 1), ("order-2", 9), ("order-1", 3)):
            await repository.want_transfers(conn, [("x", PEER, order_id, priority)])
        assert not await repository.request_forward(conn, "x", PEER, "penn")  # wanted already: not new
    (row,) = await repository.list_transfers(transfer_pool, MAX_ATTEMPTS, Page())
    assert (row["order_ids"], row["priority"], row["requested_by"]) == (["order-1", "order-2"], 9, "penn")


async def test_pages_follow_the_cursor(transfer_pool: asyncpg.Pool) -> None:
    names = [f"f.{i:03d}" for i in range(7)]
    async with transfer_pool.acquire() as conn:
        await repository.want_transfers(conn, [(name, destination, "order-1", 0) for name in reversed(names)
                                               for destination in ("nrao", "penn")])
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        rows = await repository.list_transfers(transfer_pool, MAX_ATTEMPTS, Page(limit=4, after=after))
        seen += [(r["file_name"], r["destination"]) for r in rows]
        if len(rows) < 4:
            break
        after = decode_cursor(encode_cursor(rows[-1]))
    assert seen == [(n, d) for n in names for d in ("nrao", "penn")]
    for bad in ("nonsense", "WzFd", encode_cursor({"file_name": "x", "destination": "y"})[:-2]):
        with pytest.raises(BadQuery, match="next_cursor"):
            decode_cursor(bad)


@pytest.mark.usefixtures("drop_schemas")
async def test_the_http_views(settings: Settings) -> None:
    settings = transfer_settings(settings, max_attempts=MAX_ATTEMPTS)
    try:
        async with running_transfer(settings) as runner, aiohttp.ClientSession() as session:
            assert runner.ctx is not None
            async with runner.ctx.pool.acquire() as conn:
                await _facts(conn)
            api = Api(session, f"http://127.0.0.1:{settings.http_port('transfer')}{PREFIX}",
                      token(settings, Role.READ_ONLY))
            status, body, _ = await api.call("GET", "/transfers?state=failed")
            assert status == 200 and body["max_attempts"] == MAX_ATTEMPTS and body["next_cursor"] is None
            assert [(t["file_name"], t["state"], t["attempts"]) for t in body["transfers"]] == [
                ("e.failed", "failed", MAX_ATTEMPTS)]
            status, first, _ = await api.call("GET", f"/transfers?destination={PEER}&limit=4")
            assert status == 200 and len(first["transfers"]) == 4 and first["next_cursor"]
            after = first["next_cursor"]
            status, rest, _ = await api.call("GET", f"/transfers?destination={PEER}&limit=4&after={after}")
            assert [t["file_name"] for t in first["transfers"] + rest["transfers"]] == [
                "a.queued", "b.in_flight", "c.delivered", "d.held", "e.failed", "f.retrying", "g.recovered",
                "h.conflict"]
            status, stuck, _ = await api.call("GET", "/transfers/stuck")
            assert status == 200 and [t["file_name"] for t in stuck["transfers"]] == ["e.failed", "f.retrying"]
            assert stuck["transfers"][0]["last_error"] == f"timed out ({MAX_ATTEMPTS})"
            for query in ("state=lost", "limit=0", "limit=1001", "limit=many", "after=nonsense"):
                status, body, _ = await api.call("GET", f"/transfers?{query}")
                assert status == 400 and body["error"]["code"] == "bad_request", query
            status, body, _ = await api.call("GET", "/transfers/stuck", bearer=None)
            assert status == 401
    finally:
        await delete_topology(settings)
