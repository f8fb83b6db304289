"""The one leader loop: one process leads, the others stand by, and a leader knows when its lock is gone."""

from __future__ import annotations

import asyncio

import pytest

from shared.locks import Leader, LeadershipTaken, lock_key
from tests.conftest import wait_for

pytestmark = pytest.mark.usefixtures("drop_schemas")


def test_keys_are_stable_and_distinct() -> None:
    # The same derivation the five copies used before (blake2b-64 of "outbox:karoo_ingest"): processes of the
    # previous build and of this one still agree on every lock.
    assert lock_key("outbox", "karoo_ingest") == 2536169104359162016
    assert lock_key("outbox", "a") != lock_key("outbox", "b") != lock_key("dispatch", "a")
    assert -(2**63) <= lock_key("stream", "obsflow.log", "catalog") < 2**63


async def test_one_leads_the_other_stands_by_then_takes_over(pool, unique: str) -> None:
    key = lock_key("test", unique)
    first, second = Leader(pool, key, "first"), Leader(pool, key, "second")
    stop, released = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def lead(leader: Leader, hold: asyncio.Event | None) -> None:
        async with leader.leading(stop, retry_s=0.05) as leading:
            assert leading
            order.append(leader.name)
            if hold is not None:
                await hold.wait()

    leading_first = asyncio.create_task(lead(first, released))
    await wait_for(lambda: order == ["first"], timeout_s=10)
    leading_second = asyncio.create_task(lead(second, None))
    await wait_for(lambda: second.standby, timeout_s=10)
    with pytest.raises(LeadershipTaken, match="led by another process"):
        async with Leader(pool, key, "third").leading(stop, wait=False):
            pass
    released.set()
    await asyncio.wait_for(asyncio.gather(leading_first, leading_second), 10)
    assert order == ["first", "second"] and not second.standby


async def test_a_leader_knows_when_its_session_is_gone(pool, unique: str) -> None:
    leader = Leader(pool, lock_key("test", unique), "leader")
    async with leader.leading(asyncio.Event()) as leading:
        assert leading and not leader.lost()
        await pool.execute("SELECT pg_terminate_backend($1)", leader.connection.get_server_pid())
        await wait_for(leader.lost, timeout_s=10)


async def test_stopped_while_standing_by(pool, unique: str) -> None:
    key, stop = lock_key("test", unique), asyncio.Event()
    async with Leader(pool, key, "holder").leading(stop) as leading:
        assert leading
        waiter = Leader(pool, key, "waiter")

        async def wait_then_report() -> bool:
            async with waiter.leading(stop, retry_s=0.05) as got:
                return got

        task = asyncio.create_task(wait_then_report())
        await wait_for(lambda: waiter.standby, timeout_s=10)
        stop.set()
        assert await asyncio.wait_for(task, 5) is False
