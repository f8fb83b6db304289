"""Immutable, versioned events: the envelope, the payload types, routing keys and upcasting."""

from shared.events import types as _types  # noqa: F401  (registers the concrete payloads)
from shared.events.envelope import Event, decode_event, encode_event, new_event
from shared.events.registry import Payload, payload_type, registered_types

__all__ = ["Event", "Payload", "decode_event", "encode_event", "new_event", "payload_type", "registered_types"]
