"""Who may have published an event: the broker checks a message's user id; this checks that user may say it."""

from __future__ import annotations

from shared.bus.peers import FORWARDED_TYPES, forwardable, peer_of_user
from shared.events import Event, payload_type
from shared.settings import SERVICES


def publisher_refusal(event: Event, user_id: str | None) -> str | None:
    """Why the broker user `user_id` may not have published `event`; None when it may.

    The user must be one of the event type's producers at the event's own site (`<site>-<producer>`), and a
    service must publish under its own name as `producer` (an instrument names itself as it likes). A peer's link
    user (`<peer>-peer`, the shovel's) may bring that peer's own forwardable events, from any of their producers.
    """
    peer = peer_of_user(user_id)
    if peer is not None:
        return _peer_refusal(event, user_id or "", peer)
    producers = payload_type(event.type).producers
    allowed = {f"{event.site}-{p}": p for p in producers}
    if user_id is None or user_id not in allowed:
        wanted = " or ".join(sorted(allowed))
        return (f"publisher not allowed: {event.type} of site {event.site!r} is published only by {wanted}; "
                f"this message came from {user_id or 'an unnamed broker user'}")
    principal = allowed[user_id]
    if principal in SERVICES and event.producer != principal:
        return (f"publisher not allowed: {user_id} published {event.type} claiming producer {event.producer!r}; "
                f"it may only speak for {principal!r}")
    return None


def _peer_refusal(event: Event, user_id: str, peer: str) -> str | None:
    if not forwardable(event.type):
        return (f"publisher not allowed: {user_id}, the link from site {peer!r}, brought {event.type}; peers send "
                f"only {', '.join(FORWARDED_TYPES)}")
    if event.site != peer:
        return (f"publisher not allowed: {user_id}, the link from site {peer!r}, brought {event.type} of site "
                f"{event.site!r}; a peer sends only its own events")
    if event.producer not in payload_type(event.type).producers:
        return (f"publisher not allowed: {user_id} brought {event.type} claiming producer {event.producer!r}; "
                f"only {' or '.join(payload_type(event.type).producers)} produce it")
    return None
