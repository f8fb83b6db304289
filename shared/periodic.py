"""Periodic work until stop: the one loop every "every N seconds" task uses, with one error policy.

A transient failure (the database or broker down, see `shared.failures`) is logged as a warning and the work is
tried again next round; anything else propagates, so the service part fails and the supervisor restarts the
service (a bug must not hide behind a loop that logs and carries on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from shared.failures import describe, is_transient
from shared.waiting import wait_any

log = structlog.get_logger()


async def every(
    interval_s: float, work: Callable[[], Awaitable[object]], stop: asyncio.Event, *, name: str,
    first_now: bool = False, wakeup: asyncio.Event | None = None,
) -> None:
    """Run `work` every `interval_s` seconds (at once first if `first_now`, early when `wakeup` is set) until `stop`."""
    if not first_now and await wait_any(stop, wakeup, interval_s):
        return
    while not stop.is_set():
        if wakeup is not None:
            wakeup.clear()
        try:
            await work()
        except Exception as e:  # the one policy point: classified, then retried next round or propagated
            if not is_transient(e):
                raise
            log.warning("periodic_work_failed", work=name, error=describe(e), retry_in_s=interval_s)
        if await wait_any(stop, wakeup, interval_s):
            return
