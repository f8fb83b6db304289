"""Waiting on several asyncio events at once."""

from __future__ import annotations

import asyncio


async def wait_any(stop: asyncio.Event, wakeup: asyncio.Event, timeout: float) -> bool:
    """Wait for `stop`, `wakeup` or the timeout, whichever comes first; True if `stop` is set."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wakeup.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return stop.is_set()
