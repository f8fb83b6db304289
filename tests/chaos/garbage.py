"""Garbage on the bus: messages no consumer can ever apply, each of which must end as a dead letter with its reason.

They are published as the private node's administrator (guest), who may publish anywhere: on the events exchange
(every stream consumer reads them from the log, and those routed like an announcement reach ingest's work queue
too) and straight into ingest's work queue (the default exchange). Each body is unique (a nonce), so each is
found again by its sha256 among the dead letters.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aio_pika

from shared.bus.messages import wait_for_log
from shared.bus.topology import Topology
from shared.events.envelope import MAX_EVENT_BYTES

GARBAGE_KINDS = ("malformed_json", "deep_nesting", "huge_integer", "wrong_types", "oversized")
# Where a garbage message goes: on the events exchange with an announcement's routing key (the log and ingest's
# queue), with a minted file's key (the log only), or into ingest's work queue directly.
ROUTES = ("announced", "minted", "work_queue")


@dataclass(frozen=True)
class Garbage:
    """One garbage message: its kind, where it went, and the sha256 of its body."""

    kind: str
    route: str
    sha256: str
    body_bytes: int


def _envelope(site: str, nonce: str, payload: object, **changes: object) -> dict[str, object]:
    event_id = str(uuid.uuid4())
    envelope: dict[str, object] = {
        "event_id": event_id, "type": "observation.announced", "version": 1, "site": site, "producer": "garbage",
        "occurred_at": "2026-11-30T12:00:00+00:00", "correlation_id": event_id, "causation_id": None,
        "payload": payload, "nonce": nonce,
    }
    envelope.update(changes)
    return envelope


def _malformed_json(site: str, nonce: str, rng: random.Random) -> bytes:
    whole = json.dumps(_envelope(site, nonce, {"path": "/nowhere", "file_type": "uvh5"})).encode()
    return whole[: rng.randrange(10, len(whole) - 5)] + b"\x00\xff{"


def _deep_nesting(site: str, nonce: str, rng: random.Random) -> bytes:
    depth = rng.choice((40, 1000, 100_000))
    return b'{"nonce": "' + nonce.encode() + b'", "payload": ' + b"[" * depth + b"]" * depth + b"}"


def _huge_integer(site: str, nonce: str, rng: random.Random) -> bytes:
    digits = "9" * rng.choice((30, 5000, 50_000))
    text = json.dumps(_envelope(site, nonce, {"path": "/nowhere", "file_type": "uvh5", "expected_size": 0}))
    return text.replace('"expected_size": 0', f'"expected_size": {digits}').encode()


def _wrong_types(site: str, nonce: str, rng: random.Random) -> bytes:
    choices: list[dict[str, object]] = [
        _envelope(site, nonce, {"path": 42, "file_type": ["uvh5"], "expected_size": "big"}),
        _envelope(site, nonce, {"path": "/x", "file_type": "uvh5", "expected_size": True}),
        _envelope(site, nonce, "a payload that is a string"),
        _envelope(site, nonce, {"path": "/x", "file_type": "uvh5"}, version="one", event_id=17),
        _envelope(site, nonce, None, type=None),
    ]
    return json.dumps(rng.choice(choices)).encode()


def _oversized(site: str, nonce: str, rng: random.Random) -> bytes:
    padding = "x" * (MAX_EVENT_BYTES + rng.randrange(1, 256 * 1024))
    return json.dumps(_envelope(site, nonce, {"path": "/x", "file_type": "uvh5", "padding": padding})).encode()


MAKERS: dict[str, Callable[[str, str, random.Random], bytes]] = {
    "malformed_json": _malformed_json, "deep_nesting": _deep_nesting, "huge_integer": _huge_integer,
    "wrong_types": _wrong_types, "oversized": _oversized,
}


async def publish_garbage(
    amqp_url: str, prefix: str, site: str, rng: random.Random, count: int, *, attempted: list[Garbage],
    confirmed: list[Garbage],
) -> None:
    """Publish `count` garbage messages (mandatory), each appended to `attempted` before it is sent and to
    `confirmed` once the broker has confirmed it."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # As every publisher must: a broker just started confirms messages its log stream drops.
        await wait_for_log(channel, Topology(prefix=prefix))
        events = await channel.get_exchange(f"{prefix}.events", ensure=False)
        for _ in range(count):
            kind, route = rng.choice(GARBAGE_KINDS), rng.choice(ROUTES)
            body = MAKERS[kind](site, uuid.uuid4().hex, rng)
            garbage = Garbage(kind, route, hashlib.sha256(body).hexdigest(), len(body))
            attempted.append(garbage)
            message = aio_pika.Message(body, message_id=str(uuid.uuid4()), content_type="application/json",
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            if route == "work_queue":
                await channel.default_exchange.publish(message, routing_key=f"{prefix}.ingest.announced", timeout=30)
            else:
                key = f"{site}.observation.announced.uvh5" if route == "announced" else f"{site}.file.minted"
                await events.publish(message, routing_key=key, timeout=30)
            confirmed.append(garbage)


def consumers_of(route: str) -> tuple[str, ...]:
    """The schemas (by service) whose dead letters must hold a garbage message sent on `route`."""
    stream = ("catalog", "scheduler", "monitor")
    if route == "work_queue":
        return ("ingest",)
    if route == "announced":
        return ("ingest", *stream)
    return stream
