"""The one leader loop: periodic work done by one process at a time per lock, through database restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from shared.bus.backoff import Backoff
from shared.failures import describe, is_transient
from shared.locks import Leader, LeadershipLost
from shared.periodic import every

log = structlog.get_logger()


async def lead_periodically(
    leader: Leader, stop: asyncio.Event, tick: Callable[[], Awaitable[None]], *, interval_s: float,
    wakeup: asyncio.Event | None = None, on_lead: Callable[[], Awaitable[None]] | None = None,
    on_leave: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run `tick` every `interval_s` (or on `wakeup`) while this process leads, until `stop`.

    Stands by while another process leads. A lost lock (the session holding it is gone: a database restart) or an
    outage ends the leadership at once; `on_leave` runs, and the lock is taken again once it can be, `on_lead` first.
    Anything else propagates (the part fails, the supervisor restarts the service).
    """
    backoff = Backoff()
    while not stop.is_set():
        try:
            async with leader.leading(stop, retry_s=2.0, wakeup=wakeup) as leading:
                if not leading:
                    return
                try:
                    backoff.reset()
                    if on_lead is not None:
                        await on_lead()

                    async def guarded_tick() -> None:
                        if leader.lost():
                            raise LeadershipLost(f"{leader.name} lost the session holding its lock")
                        await tick()

                    await every(interval_s, guarded_tick, stop, name=leader.name, first_now=True, wakeup=wakeup)
                finally:
                    if on_leave is not None:
                        await on_leave()
        except Exception as e:  # the policy point: a lost lock or an outage is waited out, nothing else
            if not (isinstance(e, LeadershipLost) or is_transient(e)):
                raise
            log.warning("leader_retry", leader=leader.name, error=describe(e), retry_in_s=round(backoff.peek(), 2))
            await backoff.wait(stop)
