"""How an event becomes an AMQP message and back, and the drain marker that is not an event."""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from aiormq.abc import DeliveredMessage

from shared.errors import BrokerUnavailable
from shared.events import Event, encode_event

MARKER_HEADER = "x-obsflow-marker"
REASON_HEADER = "x-obsflow-reason"
CONSUMER_HEADER = "x-obsflow-consumer"
BODY_BYTES_HEADER = "x-obsflow-body-bytes"  # on a dead letter whose body was too large to keep whole
BODY_SHA256_HEADER = "x-obsflow-body-sha256"


def event_message(
    event_id: str, event_type: str, body: bytes, headers: dict[str, Any] | None = None, *, user_id: str | None = None
) -> aio_pika.Message:
    """A persistent JSON message whose message id is the event id (so brokers and consumers can dedupe).

    `user_id` is the publishing broker user: RabbitMQ refuses a message whose user id is not the connection's,
    so consumers can trust it to say who published.
    """
    return aio_pika.Message(
        body,
        message_id=event_id,
        type=event_type,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers or {},
        user_id=user_id,
    )


class Unroutable(BrokerUnavailable):
    """The broker routed a message nowhere: its bindings are not in place (yet: for a moment after a restart)."""


async def publish_confirmed(exchange: AbstractExchange, message: aio_pika.Message, routing_key: str) -> None:
    """Publish `message` and wait for the broker's confirm; Unroutable if it could route it to no queue.

    Mandatory, because for a moment after a restart the broker accepts and confirms messages it has no route for
    yet, and drops them: a confirm alone does not mean a message reached the log.
    """
    result = await exchange.publish(message, routing_key=routing_key, mandatory=True)
    if isinstance(result, DeliveredMessage):
        raise Unroutable(f"the broker could not route {routing_key!r} from {exchange.name!r} to any queue")


async def publish_event(exchange: AbstractExchange, event: Event, *, user_id: str | None = None) -> None:
    """Publish one event directly, with a confirm: for producers without an outbox (instruments, the CLI)."""
    message = event_message(str(event.event_id), event.type, encode_event(event), user_id=user_id)
    await publish_confirmed(exchange, message, event.routing_key)


def marker_of(message: AbstractIncomingMessage) -> str | None:
    """The drain-marker id a message carries, or None for an ordinary event."""
    value = (message.headers or {}).get(MARKER_HEADER)
    return str(value) if value is not None else None


def stream_offset(message: AbstractIncomingMessage) -> int:
    """The stream offset the broker stamped on a delivery."""
    return int((message.headers or {})["x-stream-offset"])  # type: ignore[arg-type]
