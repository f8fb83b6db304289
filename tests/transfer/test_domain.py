"""The transfer service's pure decisions: routes and the concurrency optimizer."""

from __future__ import annotations

from services.transfer.optimizer import ConcurrencyOptimizer
from services.transfer.routing import Arrived, Forward, Send, next_hop
from shared.settings import PeerSettings

PEERS = {
    "nrao": PeerSettings(name="nrao"),
    "penn": PeerSettings(name="penn", via="nrao"),
}


def test_a_direct_peer_gets_the_bytes_from_here() -> None:
    assert next_hop(PEERS, "nrao", {"karoo"}) == Send("nrao")


def test_a_peer_behind_a_via_gets_them_through_it_then_from_it() -> None:
    assert next_hop(PEERS, "penn", {"karoo"}) == Send("nrao")
    assert next_hop(PEERS, "penn", {"karoo", "nrao"}) == Forward("nrao")


def test_a_destination_that_holds_a_copy_needs_nothing() -> None:
    assert next_hop(PEERS, "penn", {"karoo", "penn"}) == Arrived()
    assert next_hop(PEERS, "nrao", {"nrao"}) == Arrived()


def test_concurrency_rises_while_throughput_rises_and_holds_at_the_top() -> None:
    optimizer = ConcurrencyOptimizer(level=2, maximum=4)
    assert optimizer.observe(100, 1.0, 2, 0) == 3  # the first sample: try one more
    assert optimizer.observe(200, 1.0, 3, 0) == 4  # more came through: one more again
    assert optimizer.observe(400, 1.0, 4, 0) == 4  # capped


def test_concurrency_halves_when_files_fail_and_falls_when_throughput_falls() -> None:
    optimizer = ConcurrencyOptimizer(level=8)
    assert optimizer.observe(1000, 1.0, 10, 5) == 4
    optimizer.observe(1000, 1.0, 4, 0)  # measured afresh at the new level: 5
    assert optimizer.level == 5
    assert optimizer.observe(100, 1.0, 5, 0) == 4  # throughput fell to a tenth
    assert optimizer.observe(90, 1.0, 4, 0) == 4  # within the band: held


def test_concurrency_never_leaves_its_bounds() -> None:
    optimizer = ConcurrencyOptimizer(level=1, minimum=1)
    for _ in range(5):
        optimizer.observe(0, 1.0, 4, 4)
    assert optimizer.level == 1
    assert optimizer.observe(0, 1.0, 0, 0) == 1  # nothing tried: nothing learnt
