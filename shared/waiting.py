"""Waiting on a stop event, optionally a wake-up event, and a timeout, whichever comes first."""

from __future__ import annotations

import asyncio


async def wait_any(stop: asyncio.Event, wakeup: asyncio.Event | None, timeout: float) -> bool:
    """Wait for `stop`, `wakeup` or the timeout, whichever comes first; True if `stop` is set."""
    if stop.is_set():
        return True
    waiters = [asyncio.ensure_future(stop.wait())]
    if wakeup is not None:
        waiters.append(asyncio.ensure_future(wakeup.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return stop.is_set()
