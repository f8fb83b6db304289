"""What each principal may do on the broker, derived from the event registry and the topology (pure).

Services may not configure anything (`obsflow setup` declares the topology); each may publish on the events
exchange only the routing keys of the event types it produces, for its own site; it reads the log stream and its
own work queues. Instruments may only announce observations; readers only subscribe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.bus.peers import peer_routing_keys, peer_user
from shared.events import registered_types
from shared.settings import SERVICES

NOTHING = "^$"


@dataclass(frozen=True)
class BrokerGrant:
    """A broker user's vhost permissions (regexes over resource names) and topic permissions per exchange."""

    principal: str
    configure: str
    write: str
    read: str
    topics: tuple[tuple[str, str, str], ...]  # (exchange, write regex, read regex)
    user: str | None = None  # the broker user, when it is not `<site>-<principal>` (a peer's: `<peer>-peer`)


def produced_by(principal: str) -> list[str]:
    """The event types `principal` may publish, from each payload's `producers`."""
    return sorted(t for t, cls in registered_types().items() if principal in cls.producers)


def routing_keys_of(site: str, event_types: list[str]) -> str:
    """A regex matching `<site>.<type>[.<detail>]` for the given types (nothing when there are none)."""
    if not event_types:
        return NOTHING
    alternatives = "|".join(re.escape(t) for t in event_types)
    return f"^{re.escape(site)}\\.({alternatives})(\\.[^.]+)?$"


def broker_grants(site: str, prefix: str) -> list[BrokerGrant]:
    """The grant of every principal of a site whose bus lives under `prefix`."""
    p = re.escape(prefix)
    events, dead = f"{prefix}.events", f"{prefix}.dead"
    grants = [
        BrokerGrant(
            service, configure=NOTHING, write=f"^{p}\\.(events|dead|control)$",
            read=f"^{p}\\.(log|{re.escape(service)}\\..+)$",
            topics=((events, routing_keys_of(site, produced_by(service)), NOTHING), (dead, ".*", NOTHING)),
        )
        for service in SERVICES
    ]
    grants.append(BrokerGrant(
        "instrument", configure=NOTHING, write=f"^{p}\\.(events|control)$", read=NOTHING,  # control: wait_for_log
        topics=((events, routing_keys_of(site, produced_by("instrument")), NOTHING),),
    ))
    # Readers subscribe with server-named exclusive queues bound to the events exchange, or read the log.
    grants.append(BrokerGrant(
        "reader", configure="^amq\\.gen-.*$", write="^amq\\.gen-.*$", read=f"^({p}\\.(events|log)|amq\\.gen-.*)$",
        topics=((events, NOTHING, ".*"),),
    ))
    return grants


def peer_grants(prefix: str, peers: list[str]) -> list[BrokerGrant]:
    """The inbound user of each peer (`<peer>-peer`): it may publish on the events exchange that peer's own
    forwardable events, and nothing else; it reads nothing and configures nothing."""
    events = f"{prefix}.events"
    return [BrokerGrant(peer_user(peer), configure=NOTHING, write=f"^{re.escape(events)}$", read=NOTHING,
                        topics=((events, peer_routing_keys(peer), NOTHING),), user=peer_user(peer))
            for peer in peers]
