"""Run what concurrent callers submit as one batch: the first caller runs everything waiting, one batch at a time.

Used to mint the files of concurrent ingests in ONE transaction (and one round of fsyncs and renames) instead
of one each: the database round trips and journal commits are what limit many small files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchRunner = Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]]


class Batcher(Generic[Item, Result]):
    """Gathers items submitted while a batch runs into the next one; each caller gets its own item's result."""

    def __init__(self, run: BatchRunner[Item, Result], *, max_items: int = 256) -> None:
        self._run = run
        self._max_items = max_items
        self._lock = asyncio.Lock()
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []

    async def submit(self, item: Item) -> Result:
        """Run `item` in the next batch; return its result or raise its (or the whole batch's) error."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[Item]) -> list[Result]:
        """Run `items` together in the next batch(es); their results in order, or the first error raised."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = [loop.create_future() for _ in items]
        self._waiting.extend(zip(items, futures, strict=True))
        while not all(future.done() for future in futures):
            async with self._lock:
                if not all(future.done() for future in futures):
                    batch, self._waiting = self._waiting[: self._max_items], self._waiting[self._max_items :]
                    await self._run_batch(batch)
        return [future.result() for future in futures]

    async def _run_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await self._run([item for item, _ in batch])
        except Exception as e:
            for _item, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        except BaseException:
            # Cancelled (shutdown): the others in this batch are not done either; they are handed back.
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
