"""A lane: everything this site sends to one peer, its concurrency (adapted to what the link delivers) and its
bandwidth cap (a leaky bucket, aiolimiter)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.transfer.optimizer import ConcurrencyOptimizer
from shared.settings import PeerSettings


@dataclass
class LinkSample:
    """What one batch moved: for the optimizer."""

    started: float = field(default_factory=time.monotonic)
    moved_bytes: int = 0


class Lane:
    """The state of sending to one peer."""

    def __init__(self, peer: PeerSettings, optimizer: ConcurrencyOptimizer, *, link_wait_base_s: float = 1.0,
                 link_wait_cap_s: float = 60.0) -> None:
        self.peer = peer
        self.optimizer = optimizer
        self._link_wait_base_s = link_wait_base_s
        self._link_wait_cap_s = link_wait_cap_s
        self._link_wait_s = 0.0
        self.batches: set[asyncio.Task[None]] = set()
        self.sending: set[str] = set()  # files in a batch of this lane now: a second transfer of one waits for it
        # Bytes per second, in pieces of at most a tenth of a second's worth (aiolimiter takes no more than its rate).
        rate = peer.bandwidth_mbps * 1e6 / 8 if peer.bandwidth_mbps else None
        self._limiter = AsyncLimiter(rate, 1.0) if rate else None
        self._piece = max(1, int(rate / 10)) if rate else 0

    def unreachable(self) -> float:
        """The peer could not be reached: how long the lane's files wait before it is tried again (doubling, capped)."""
        self._link_wait_s = min(self._link_wait_cap_s, max(self._link_wait_base_s, self._link_wait_s * 2))
        return self._link_wait_s

    def reachable(self) -> float:
        """The peer answered: the lane's link is up again."""
        self._link_wait_s = 0.0
        return 0.0

    def waiting_for_link(self) -> bool:
        """The last batch found the peer unreachable: send one probe at a time until it answers."""
        return self._link_wait_s > 0

    @property
    def busy(self) -> bool:
        """Two batches at a time: one sends while the next gathers."""
        return len(self.batches) >= 2

    async def spend(self, nbytes: int) -> None:
        """Wait until the bandwidth cap allows `nbytes` more (at once without a cap)."""
        if self._limiter is None:
            return
        while nbytes > 0:
            piece = min(nbytes, self._piece)
            await self._limiter.acquire(piece)
            nbytes -= piece


class TransferFigures:
    """The transfer service's Prometheus figures (bounded labels: peers and outcomes, never file names)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.files = Counter("obsflow_transfer_files_total", "Files a batch ended with, by peer and outcome",
                             ["peer", "outcome"], registry=registry)
        self.bytes = Counter("obsflow_transfer_bytes_total", "Bytes sent to each peer", ["peer"], registry=registry)
        self.concurrency = Gauge("obsflow_transfer_concurrency", "Files kept in flight to each peer (adapted)",
                                 ["peer"], registry=registry)
        self.created = Counter("obsflow_transfers_created_total", "Transfers orders created", registry=registry)
