"""The faults: at seeded random intervals, each kind in a loop of its own (so they overlap), until a deadline."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from shared.failures import describe, is_transient
from shared.settings import SERVICES
from tests.chaos.garbage import Garbage, publish_garbage
from tests.chaos.site import ChaosSite

log = structlog.get_logger()


@dataclass(frozen=True)
class Pace:
    """Seconds between two faults of a kind (uniform in [low, high]) and before its first."""

    first: tuple[float, float]
    between: tuple[float, float]


PACES = {
    "service_kill": Pace((3, 10), (4, 12)),
    "broker_restart": Pace((8, 20), (25, 50)),
    "database_restart": Pace((5, 15), (15, 35)),
    "garbage": Pace((2, 6), (2, 6)),
}


@dataclass
class FaultReport:
    """What was injected, by kind, and what the harness saw while injecting it."""

    injected: Counter[str] = field(default_factory=Counter)
    garbage: list[Garbage] = field(default_factory=list)  # confirmed by the broker: each must be dead-lettered
    garbage_attempted: list[Garbage] = field(default_factory=list)  # sent, confirmed or not: may be dead-lettered
    garbage_attempts_failed: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)


class Faults:
    """Injects faults into a ChaosSite until `stop_at` (monotonic time)."""

    def __init__(self, site: ChaosSite, rng: random.Random, report: FaultReport) -> None:
        self._site = site
        self._rng = rng
        self._report = report
        self._started = time.monotonic()
        self._broker_lock = asyncio.Lock()  # one broker restart at a time; garbage waits for the broker

    async def run(self, stop_at: float) -> None:
        """Every kind's loop, together; returns when the last fault in progress is over."""
        kinds: dict[str, Callable[[random.Random], Awaitable[None]]] = {
            "service_kill": self._kill_service, "broker_restart": self._restart_broker,
            "database_restart": self._restart_database, "garbage": self._publish_garbage,
        }
        # One random stream per kind, derived from the seed: the schedule of one kind does not shift with another's.
        streams = {kind: random.Random(self._rng.random()) for kind in kinds}
        await asyncio.gather(*(self._loop(kind, fault, streams[kind], stop_at) for kind, fault in kinds.items()))

    async def _loop(self, kind: str, fault: Callable[[random.Random], Awaitable[None]], rng: random.Random,
                    stop_at: float) -> None:
        pace = PACES[kind]
        at = time.monotonic() + rng.uniform(*pace.first)
        while at < stop_at:
            await asyncio.sleep(max(0.0, at - time.monotonic()))  # the schedule: faults at random times
            self._note(kind)
            await fault(rng)
            at = time.monotonic() + rng.uniform(*pace.between)

    def _note(self, what: str) -> None:
        self._report.timeline.append((round(time.monotonic() - self._started, 1), what))
        log.info("chaos_fault", fault=what)

    async def _kill_service(self, rng: random.Random) -> None:
        name = rng.choice(SERVICES)
        await self._site.kill_service(name)
        self._report.injected["service_kill"] += 1
        self._report.injected[f"service_kill.{name}"] += 1
        await asyncio.sleep(rng.uniform(0.0, 3.0))  # down a moment, as under a supervisor's backoff
        await self._site.start_service(name)

    async def _restart_broker(self, rng: random.Random) -> None:
        async with self._broker_lock:
            await asyncio.to_thread(self._site.broker.restart, rng.uniform(1.0, 5.0))
        self._report.injected["broker_restart"] += 1

    async def _restart_database(self, rng: random.Random) -> None:
        mode = rng.choice(("fast", "immediate"))
        await asyncio.to_thread(self._site.database.restart, rng.uniform(0.0, 4.0), mode)
        self._report.injected["database_restart"] += 1
        self._report.injected[f"database_restart.{mode}"] += 1

    async def _publish_garbage(self, rng: random.Random) -> None:
        if self._broker_lock.locked():
            return  # the broker is down: nothing to publish to
        sent: list[Garbage] = []
        try:
            await publish_garbage(self._site.broker.amqp_url, self._site.name, self._site.name, rng,
                                  rng.randrange(1, 6), attempted=self._report.garbage_attempted, confirmed=sent)
        except Exception as e:  # a restart began meanwhile: counted; what was not confirmed is not expected anywhere
            if not is_transient(e):
                raise
            self._report.garbage_attempts_failed += 1
            log.warning("chaos_garbage_not_confirmed", error=describe(e))
        self._report.garbage += sent
        self._report.injected["garbage"] += len(sent)
        for garbage in sent:
            self._report.injected[f"garbage.{garbage.kind}"] += 1
