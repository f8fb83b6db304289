"""The one envelope every event travels in, its JSON encoding and its routing key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, SerializeAsAny, StrictInt, ValidationError

from shared.bounded_json import JsonRefused, nesting_depth, parse_bounded
from shared.errors import MalformedEvent, UnknownEventType
from shared.events.bounds import Name, Word
from shared.events.registry import Payload, payload_type, routing_word, upcast

MAX_EVENT_BYTES = 1024**2  # the default of `bus.max_event_bytes`: an event is metadata, never data
MAX_EVENT_DEPTH = 16  # envelope, payload, provenance: a few levels; a hundred thousand `[` are refused


class Event(BaseModel):
    """An immutable fact: what happened (`payload`), where (`site`), who said so (`producer`) and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    type: Word
    version: StrictInt
    site: Word
    producer: Name
    occurred_at: AwareDatetime
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    payload: SerializeAsAny[Payload]

    @property
    def routing_key(self) -> str:
        """`<site>.<subject>.<verb>[.<detail>]`, e.g. `karoo.file.minted.uvh5`."""
        key = f"{self.site}.{self.type}"
        detail = self.payload.routing_detail()
        return f"{key}.{routing_word(detail)}" if detail else key


def new_event(
    payload: Payload,
    *,
    site: str,
    producer: str,
    caused_by: Event | None = None,
    occurred_at: datetime | None = None,
) -> Event:
    """A new event for `payload`; when `caused_by` is given it inherits its correlation id."""
    event_id = uuid.uuid4()
    correlation = (caused_by.correlation_id or caused_by.event_id) if caused_by else event_id
    return Event(
        event_id=event_id,
        type=payload.event_type,
        version=payload.version,
        site=site,
        producer=producer,
        occurred_at=occurred_at or datetime.now(UTC),
        correlation_id=correlation,
        causation_id=caused_by.event_id if caused_by else None,
        payload=payload,
    )


def encode_event(event: Event) -> bytes:
    """The event's JSON bytes, as stored in an outbox and carried on the bus."""
    return event.model_dump_json().encode()


def decode_event(body: bytes | str | dict[str, Any], *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse an event of any known version into the current one; raise MalformedEvent saying why not.

    Whatever the body (any bytes, any JSON, at most `max_bytes`), MalformedEvent is the only error raised.
    """
    try:
        raw = _parse(body, max_bytes)
        return _decode_object(raw)
    except MalformedEvent:
        raise
    except Exception as e:  # the decoding boundary: an upcaster or validator met a shape nobody expected
        raise MalformedEvent(f"event cannot be decoded: {e.__class__.__name__}: {str(e)[:200]}") from e


def _parse(body: bytes | str | dict[str, Any], max_bytes: int) -> Any:
    if isinstance(body, dict):
        if nesting_depth(body) > MAX_EVENT_DEPTH:
            raise MalformedEvent(f"event is nested deeper than {MAX_EVENT_DEPTH} levels")
        return body
    try:
        return parse_bounded(body, max_bytes=max_bytes, max_depth=MAX_EVENT_DEPTH, what="the event")
    except JsonRefused as e:
        raise MalformedEvent(str(e)) from e


def _decode_object(raw: Any) -> Event:
    if not isinstance(raw, dict):
        raise MalformedEvent("message is not a JSON object")
    missing = [k for k in ("type", "version", "payload") if k not in raw]
    if missing:
        raise MalformedEvent(f"event lacks {', '.join(missing)}")
    version, event_type = raw["version"], raw["type"]
    # A bool is not a version (JSON `true` would otherwise pass as 1).
    if not isinstance(raw["payload"], dict) or isinstance(version, bool) or not isinstance(version, int):
        raise MalformedEvent("event payload must be an object and version an integer")
    if not isinstance(event_type, str) or len(event_type) > 64:
        raise MalformedEvent("event type must be a short string such as 'file.minted'")
    if version < 1:
        raise UnknownEventType(f"{event_type} version {version} does not exist; versions start at 1")
    cls = payload_type(event_type)
    try:
        payload = cls.model_validate(upcast(cls.event_type, version, raw["payload"]))
    except ValidationError as e:
        raise _invalid(event_type, e, ("payload",)) from e
    try:
        return Event.model_validate({**raw, "version": cls.version, "payload": payload})
    except ValidationError as e:
        raise _invalid(event_type, e, ()) from e


def _invalid(event_type: str, error: ValidationError, prefix: tuple[str, ...]) -> MalformedEvent:
    first = error.errors()[0]
    where = ".".join(str(p) for p in (*prefix, *first["loc"]))
    return MalformedEvent(f"{event_type} event invalid at {where or 'top level'}: {first['msg']}")
