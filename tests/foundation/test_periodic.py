"""`every`: the one "every N seconds until stop" loop, and its one error policy."""

from __future__ import annotations

import asyncio

import pytest

from shared.errors import DatabaseUnavailable
from shared.periodic import every
from tests.conftest import wait_for


async def test_transient_failures_are_tried_again_next_round_and_stop_ends_the_loop() -> None:
    stop, rounds = asyncio.Event(), []

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) <= 2:
            raise DatabaseUnavailable("the database is restarting")

    loop = asyncio.create_task(every(0.01, work, stop, name="test", first_now=True))
    await wait_for(lambda: len(rounds) >= 5, timeout_s=5)
    stop.set()
    await asyncio.wait_for(loop, 1)  # ends promptly, without an error
    assert loop.exception() is None


async def test_anything_else_propagates_so_the_part_fails() -> None:
    async def work() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        await asyncio.wait_for(every(0.01, work, asyncio.Event(), name="test"), 5)


async def test_waits_first_unless_told_and_wakes_up_early() -> None:
    stop, wakeup, rounds = asyncio.Event(), asyncio.Event(), []

    async def work() -> None:
        rounds.append(1)

    loop = asyncio.create_task(every(3600, work, stop, name="test", wakeup=wakeup))
    await asyncio.sleep(0.05)  # a margin in which nothing may happen: the first round is an hour away
    assert rounds == []
    wakeup.set()
    await wait_for(lambda: rounds == [1], timeout_s=5)
    stop.set()
    await asyncio.wait_for(loop, 1)
