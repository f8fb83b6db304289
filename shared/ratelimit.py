"""A sliding-window limit per key (an account, a client address), in memory, bounded in the keys it keeps.

The maintained libraries were weighed: `limits`' in-memory asyncio storage expires keys with a thread hop per key
on every hit, which is what an attacker with many addresses would exercise; `aiohttp-ratelimiter` is built on it.
A window of timestamps per key is all the login limits need.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class SlidingWindow:
    """At most `limit` marks per key in any `window_s` seconds; least recently marked keys forgotten beyond
    `max_keys` (a key's window is the most it could be held back anyway)."""

    def __init__(
        self, limit: int, window_s: float, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a sliding window needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._marks: OrderedDict[str, deque[float]] = OrderedDict()

    def _live(self, key: str, now: float) -> deque[float] | None:
        marks = self._marks.get(key)
        if marks is None:
            return None
        while marks and marks[0] <= now - self.window_s:
            marks.popleft()
        if not marks:
            del self._marks[key]
            return None
        return marks

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may be marked again, or None if it may be now."""
        now = self._clock()
        marks = self._live(key, now)
        if marks is None or len(marks) < self.limit:
            return None
        return max(marks[0] + self.window_s - now, 0.0)

    def mark(self, key: str) -> None:
        """Count one event (an attempt, a failure) against `key` now."""
        now = self._clock()
        marks = self._live(key, now)
        if marks is None:
            marks = self._marks[key] = deque(maxlen=self.limit)
            while len(self._marks) > self._max_keys:
                self._marks.popitem(last=False)
        self._marks.move_to_end(key)
        marks.append(now)

    def unmark(self, key: str) -> None:
        """Take back the latest mark of `key` (an attempt that turned out to be a success)."""
        marks = self._marks.get(key)
        if marks:
            marks.pop()
            if not marks:
                del self._marks[key]


def retry_after_header(seconds: float) -> dict[str, str]:
    """The Retry-After header for a wait of `seconds` (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
