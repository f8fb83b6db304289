"""When a failed transfer is tried again (pure): capped exponential backoff, a bound on attempts."""

from __future__ import annotations


def retry_delay_s(attempts: int, base_s: float, cap_s: float) -> float:
    """The wait before the next attempt, after `attempts` (>= 1) attempts have failed: base·2^(n-1), capped."""
    return min(cap_s, base_s * 2 ** max(0, attempts - 1))
