"""Run what concurrent callers submit as batches: what arrives while batches run gathers into the next one.

Used wherever one round trip (a query, a transaction, a thread hop, a round of fsyncs) can serve many callers
at once: work-queue deliveries handled together, files minted in one transaction, staging locks taken in one
query. A caller waits for its own items' results only, never for a turn to run somebody else's batch.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchRunner = Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]]


class Batcher(Generic[Item, Result]):
    """Gathers submitted items into batches run by up to `concurrency` runners; each caller gets its own results.

    The runner function returns one result or exception per item, in order; if it raises, every item of that
    batch gets the error. A caller cancelled before its items were taken withdraws them.
    """

    def __init__(self, run: BatchRunner[Item, Result], *, max_items: int = 256, concurrency: int = 1) -> None:
        self._run = run
        self._max_items = max_items
        self._concurrency = concurrency
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._runners: set[asyncio.Task[None]] = set()  # held so that no runner is garbage-collected mid-batch
        self._running = 0
        # Batches run in the context the Batcher was made in, not in the first caller's: a batch serves many
        # callers, so no one caller's bindings (its event id in every log line) may label the others' work.
        self._context = contextvars.copy_context()

    async def submit(self, item: Item) -> Result:
        """Run `item` in the next batch; return its result or raise its (or the whole batch's) error."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[Item]) -> list[Result]:
        """Run `items` in the next batch(es); their results in order, or the first error raised."""
        results = await self.submit_each(items)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]  # no exception among them, checked above

    async def submit_each(self, items: Sequence[Item]) -> list[Result | BaseException]:
        """Run `items` in the next batch(es); each one's result or error, in order (nothing raised for them)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = [loop.create_future() for _ in items]
        self._waiting.extend(zip(items, futures, strict=True))
        if self._running < self._concurrency:
            self._running += 1
            runner = loop.create_task(self._drain(), context=self._context.copy())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        try:
            await asyncio.wait(futures)
        except BaseException:
            for future in futures:
                future.cancel()  # not taken yet: withdrawn; in a running batch: its result is dropped
            raise
        return [future.exception() or future.result() for future in futures]

    async def _drain(self) -> None:
        """Run batches of what is waiting until nothing is (a runner starts on the next turn of the loop, so the
        items submitted in the same burst share its first batch)."""
        try:
            while self._waiting:
                live = [entry for entry in self._waiting if not entry[1].done()]
                batch, self._waiting = live[: self._max_items], live[self._max_items :]
                if batch:
                    await self._run_batch(batch)
        finally:
            # No await between the last look at the waiting list and this: whatever is submitted from now on
            # finds a free slot and starts a runner of its own.
            self._running -= 1

    async def _run_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await self._run([item for item, _ in batch])
        except Exception as e:
            for _item, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        except BaseException:
            # Cancelled (the loop is shutting down): the callers of this batch are cancelled too.
            for _item, future in batch:
                future.cancel()
            raise
        for (_item, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # its caller was cancelled meanwhile
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
