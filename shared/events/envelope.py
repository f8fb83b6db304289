"""The one envelope every event travels in, its JSON encoding and its routing key."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, SerializeAsAny, ValidationError

from shared.errors import MalformedEvent
from shared.events.registry import Payload, payload_type, routing_word, upcast


class Event(BaseModel):
    """An immutable fact: what happened (`payload`), where (`site`), who said so (`producer`) and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    type: str
    version: int
    site: str
    producer: str
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


def decode_event(body: bytes | str | dict[str, Any]) -> Event:
    """Parse an event of any known version into the current one; raise MalformedEvent saying why not."""
    try:
        raw = body if isinstance(body, dict) else json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvent(f"message is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise MalformedEvent("message is not a JSON object")
    missing = [k for k in ("type", "version", "payload") if k not in raw]
    if missing:
        raise MalformedEvent(f"event lacks {', '.join(missing)}")
    if not isinstance(raw["payload"], dict) or not isinstance(raw["version"], int):
        raise MalformedEvent("event payload must be an object and version an integer")
    cls = payload_type(str(raw["type"]))
    try:
        payload = cls.model_validate(upcast(cls.event_type, raw["version"], raw["payload"]))
        return Event.model_validate({**raw, "version": cls.version, "payload": payload})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedEvent(f"{raw['type']} event invalid at {where or 'top level'}: {first['msg']}") from e
