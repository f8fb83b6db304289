"""Capped exponential backoff with jitter, interruptible by a stop event."""

from __future__ import annotations

import asyncio
import contextlib
import random


class Backoff:
    """Delays of base·2^n (jittered), capped at `cap_s`; `reset()` after a success."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0) -> None:
        self._base_s = base_s
        self._cap_s = cap_s
        self._attempt = 0

    def peek(self) -> float:
        """The delay the next wait will use (before jitter)."""
        return min(self._cap_s, self._base_s * 2**self._attempt)

    def reset(self) -> None:
        """Start again from the base delay."""
        self._attempt = 0

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        """Sleep the next delay, returning early if `stop` is set."""
        delay = self.peek() * random.uniform(0.5, 1.0)
        self._attempt += 1
        if stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
