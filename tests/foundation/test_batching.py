"""The Batcher: what arrives while batches run gathers into the next one, each caller gets its own results."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from shared.batching import Batcher
from tests.conftest import wait_for


class Tenfold:
    """A runner that multiplies each item by ten, records its batches and holds them while `gate` is closed.

    Item -1 is refused on its own (its result is a ValueError); item -2 makes the whole batch raise.
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.running = 0
        self.most_running = 0

    async def __call__(self, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        if -2 in items:
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"item {item} refused") if item == -1 else item * 10 for item in items]

    def taken(self) -> list[int]:
        """Every item passed to the runner, in order."""
        return [item for batch in self.batches for item in batch]


async def test_a_burst_shares_one_batch_and_what_arrives_meanwhile_the_next() -> None:
    run = Tenfold()
    batcher: Batcher[int, int] = Batcher(run)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1, 2, 3, 4]]

    run.gate.clear()
    first = asyncio.create_task(batcher.submit(100))
    await wait_for(lambda: run.running == 1, timeout_s=5)
    later = [asyncio.create_task(batcher.submit(i)) for i in range(101, 106)]
    together = asyncio.create_task(batcher.submit_many([200, 201]))
    run.gate.set()
    assert await first == 1000
    assert [await task for task in later] == [1010, 1020, 1030, 1040, 1050]
    assert await together == [2000, 2010]
    assert run.batches[1:] == [[100], [101, 102, 103, 104, 105, 200, 201]]


async def test_an_items_error_is_its_own_and_submit_each_returns_it() -> None:
    batcher: Batcher[int, int] = Batcher(Tenfold())
    results = await batcher.submit_each([1, -1, 3])
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and str(results[1]) == "item -1 refused"
    with pytest.raises(ValueError, match="item -1 refused"):
        await batcher.submit_many([4, -1])
    with pytest.raises(ValueError, match="item -1 refused"):
        await batcher.submit(-1)
    good, bad = await asyncio.gather(batcher.submit(5), batcher.submit(-1), return_exceptions=True)
    assert good == 50 and isinstance(bad, ValueError)
    assert await batcher.submit_each([]) == []


async def test_a_runner_that_raises_fails_its_batch_only() -> None:
    run = Tenfold()
    run.gate.clear()
    batcher: Batcher[int, int] = Batcher(run)
    doomed = asyncio.create_task(batcher.submit_each([1, -2, 3]))
    await wait_for(lambda: run.running == 1, timeout_s=5)
    doomed_alone = asyncio.create_task(batcher.submit(4))  # in the next batch: not touched by the failure
    next_batch = asyncio.create_task(batcher.submit_each([5, 6]))
    run.gate.set()
    errors = await doomed
    assert all(isinstance(e, RuntimeError) for e in errors) and errors[0] is errors[1] is errors[2]
    assert await doomed_alone == 40
    assert await next_batch == [50, 60]
    assert run.batches == [[1, -2, 3], [4, 5, 6]]


async def test_at_most_concurrency_batches_run_at_once_each_up_to_max_items() -> None:
    run = Tenfold()
    run.gate.clear()
    batcher: Batcher[int, int] = Batcher(run, max_items=4, concurrency=3)
    callers = [asyncio.create_task(batcher.submit(i)) for i in range(30)]
    await wait_for(lambda: run.running == 3, timeout_s=5)
    run.gate.set()
    assert [await caller for caller in callers] == [i * 10 for i in range(30)]
    assert run.most_running == 3
    assert max(len(batch) for batch in run.batches) == 4
    assert sorted(run.taken()) == list(range(30))


class Gated:
    """A runner that holds each batch until every one of its items' gates is open; records its batches."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(items)
        for item in items:
            await self.gates.setdefault(item, asyncio.Event()).wait()
        return [item.upper() for item in items]

    def open(self, item: str) -> None:
        self.gates.setdefault(item, asyncio.Event()).set()


async def test_a_caller_whose_batch_is_done_returns_while_another_batch_runs() -> None:
    run = Gated()
    batcher: Batcher[str, str] = Batcher(run, concurrency=2)
    held = asyncio.create_task(batcher.submit("slow"))
    await wait_for(lambda: len(run.batches) == 1, timeout_s=5)
    quick = asyncio.create_task(batcher.submit("quick"))  # a second runner takes it
    await wait_for(lambda: len(run.batches) == 2, timeout_s=5)
    run.open("quick")
    async with asyncio.timeout(5):
        assert await quick == "QUICK"
    assert not held.done()
    run.open("slow")
    assert await held == "SLOW"


async def test_a_caller_whose_batch_is_done_does_not_wait_for_the_next_batch() -> None:
    run = Gated()
    batcher: Batcher[str, str] = Batcher(run, concurrency=1)
    first = asyncio.create_task(batcher.submit("first"))
    await wait_for(lambda: len(run.batches) == 1, timeout_s=5)
    second = asyncio.create_task(batcher.submit("second"))  # waits for the first batch, then runs and is held
    run.open("first")
    await wait_for(lambda: len(run.batches) == 2, timeout_s=5)
    async with asyncio.timeout(5):
        assert await first == "FIRST"
    assert not second.done()
    run.open("second")
    assert await second == "SECOND"
    assert run.batches == [["first"], ["second"]]


async def test_a_caller_cancelled_before_its_items_were_taken_withdraws_them() -> None:
    run = Tenfold()
    run.gate.clear()
    batcher: Batcher[int, int] = Batcher(run)
    running = asyncio.create_task(batcher.submit(1))
    await wait_for(lambda: run.running == 1, timeout_s=5)
    withdrawn = asyncio.create_task(batcher.submit_many([2, 3]))
    kept = asyncio.create_task(batcher.submit(4))
    await asyncio.sleep(0)  # one turn of the loop: both callers have put their items in the queue
    withdrawn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await withdrawn
    run.gate.set()
    assert await running == 10 and await kept == 40
    assert run.batches == [[1], [4]]


async def test_an_item_submitted_as_the_last_runner_finishes_is_still_run() -> None:
    release = asyncio.get_running_loop().create_future()

    async def run(items: list[int]) -> list[int]:
        await release
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(run, concurrency=1)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the caller's turn: its item waits
    await asyncio.sleep(0)  # the runner's turn: it takes the batch and waits for `release`
    release.set_result(None)
    await asyncio.sleep(0)  # on this turn the runner finishes its batch and stops, and then this test goes on
    async with asyncio.timeout(1):
        assert await batcher.submit(2) == 20
    assert await first == 10


async def test_a_batch_runs_in_the_batchers_context_not_its_first_callers() -> None:
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")
    seen: list[str] = []

    async def run(items: list[str]) -> Sequence[str]:
        seen.append(caller.get())
        return items

    batcher: Batcher[str, str] = Batcher(run)

    async def submit_as(name: str) -> str:
        caller.set(name)  # a delivery's own bindings (its event id, in the services)
        return await batcher.submit(name)

    assert await asyncio.gather(submit_as("first"), submit_as("second")) == ["first", "second"]
    assert seen == ["nobody"]  # one batch for both, labelled by neither
