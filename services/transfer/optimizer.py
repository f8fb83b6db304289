"""How many files to keep in flight to a peer (pure): FTS3's optimizer in small.

After each sample (bytes moved, seconds, files tried, files failed) the level moves: halved when more than
`max_error_rate` of the files failed, one up while throughput keeps rising, one down when it falls clearly, else
held. A link that delivers more with more streams (NGAS: 20 Mbps on one stream, 424 on 32 across the Pacific) gets
them; a link that is saturated or failing is not hammered.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConcurrencyOptimizer:
    """The concurrency of one link, adapted to what the link delivers."""

    level: int = 4
    minimum: int = 1
    maximum: int = 32
    max_error_rate: float = 0.1
    rise: float = 1.05  # throughput must rise by this factor to count as rising
    fall: float = 0.8  # and fall below this factor of the best seen at this level to count as falling
    _last_rate: float | None = field(default=None, repr=False)

    def observe(self, moved_bytes: int, seconds: float, tried: int, failed: int) -> int:
        """Take one sample of the link's behaviour; the concurrency to use next."""
        if tried == 0:
            return self.level
        if failed / tried > self.max_error_rate:
            self.level = max(self.minimum, self.level // 2)
            self._last_rate = None  # a new level: measure it afresh
            return self.level
        rate = moved_bytes / max(seconds, 1e-6)
        last = self._last_rate
        if last is None or rate >= last * self.rise:
            self.level = min(self.maximum, self.level + 1)
        elif rate < last * self.fall:
            self.level = max(self.minimum, self.level - 1)
        self._last_rate = rate
        return self.level
