"""Where a file goes next on its way to a destination (pure): straight there, through a `via` peer, or nowhere.

A peer declared with `via` is reached through that peer: the file crosses this site's link once, to the via peer,
and the via peer sends it on (it is asked to, once it holds a verified copy). So an order to two offsite sites
behind one thin link sends each file over the thin link once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from shared.settings import PeerSettings


@dataclass(frozen=True)
class Send:
    """Send the bytes to `peer` (the destination itself, or the via peer on the way there)."""

    peer: str


@dataclass(frozen=True)
class Forward:
    """`via` holds a verified copy: ask it to send the file on to the destination."""

    via: str


@dataclass(frozen=True)
class Arrived:
    """The destination holds a verified copy: nothing to do."""


Hop = Send | Forward | Arrived


def next_hop(peers: Mapping[str, PeerSettings], destination: str, holders: Collection[str]) -> Hop:
    """The next step for a file held at `holders` (site names) that must reach `destination`."""
    if destination in holders:
        return Arrived()
    via = peers[destination].via if destination in peers else None
    if via is None:
        return Send(destination)
    return Forward(via) if via in holders else Send(via)
