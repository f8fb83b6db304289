"""A site's RabbitMQ topology as data: the event exchange, the replayable log stream, work queues, dead letters.

The same data is declared over AMQP (`declare`, when the connecting account may configure) or rendered as broker
definitions (`definitions`, loaded by `obsflow setup` so that services, which may not configure, only check it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from shared.errors import BrokerUnavailable, ConfigurationError, ObsflowError
from shared.failures import describe, is_transient
from shared.settings import BusSettings


def not_found(kind: str, name: str, error: aiormq.exceptions.ChannelNotFoundEntity) -> ObsflowError:
    """What the broker's NOT_FOUND for one of the site's names means: the name is missing (the site is not set up),
    or, just after a broker restart, the queue exists but its process is not up yet (an outage, waited out)."""
    if is_transient(error):
        return BrokerUnavailable(f"the site's {kind} {name!r} is not up yet on the broker ({describe(error)})")
    return ConfigurationError(f"the site's {kind} {name!r} does not exist on the broker; run `obsflow setup`")


@dataclass(frozen=True)
class WorkQueue:
    """A durable quorum queue for work done once, bound to event patterns, dead-lettered after `delivery_limit`."""

    name: str
    patterns: tuple[str, ...]
    delivery_limit: int = 5


@dataclass(frozen=True)
class ExchangeSpec:
    """One exchange of the topology."""

    name: str
    kind: str  # "topic" or "direct"


@dataclass(frozen=True)
class QueueSpec:
    """One queue of the topology, its arguments and what it is bound to."""

    name: str
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, str], ...]  # (exchange, routing key)


@dataclass(frozen=True)
class Topology:
    """Every name a site's bus uses, derived from one prefix so sites and tests never collide."""

    prefix: str = "obsflow"
    stream_max_age: str = "30D"
    stream_max_bytes: int = 50 * 1024**3
    stream_segment_bytes: int = 100 * 1024**2
    work_queues: tuple[WorkQueue, ...] = field(default=())

    @classmethod
    def from_settings(cls, bus: BusSettings, work_queues: tuple[WorkQueue, ...] = ()) -> Topology:
        """The topology the settings describe, with the caller's work queues."""
        return cls(bus.prefix, bus.stream_max_age, bus.stream_max_bytes, bus.stream_segment_bytes, work_queues)

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def control_exchange(self) -> str:
        """Where drain markers enter the log: not an event route, so subscribers never see them."""
        return f"{self.prefix}.control"

    @property
    def log_stream(self) -> str:
        return f"{self.prefix}.log"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead-letters"

    def queue_name(self, name: str) -> str:
        """A work queue's full name under this prefix."""
        return f"{self.prefix}.{name}"

    def exchanges(self) -> list[ExchangeSpec]:
        """The exchanges, in declaration order."""
        return [ExchangeSpec(self.events_exchange, "topic"), ExchangeSpec(self.dead_letter_exchange, "topic"),
                ExchangeSpec(self.control_exchange, "direct")]

    def queues(self) -> list[QueueSpec]:
        """The log stream, the dead-letter queue and the work queues, each with its bindings."""
        stream = QueueSpec(self.log_stream, {
            "x-queue-type": "stream",
            "x-max-age": self.stream_max_age,
            "x-max-length-bytes": self.stream_max_bytes,
            "x-stream-max-segment-size-bytes": self.stream_segment_bytes,
        }, ((self.events_exchange, "#"), (self.control_exchange, self.log_stream)))
        dead = QueueSpec(self.dead_letter_queue, {"x-queue-type": "quorum"}, ((self.dead_letter_exchange, "#"),))
        return [stream, dead, *(self.work_queue_spec(wq) for wq in self.work_queues)]

    def work_queue_spec(self, wq: WorkQueue) -> QueueSpec:
        """A quorum work queue bound to its patterns, dead-lettering to this site's dead-letter exchange."""
        arguments = {"x-queue-type": "quorum", "x-dead-letter-exchange": self.dead_letter_exchange,
                     "x-delivery-limit": wq.delivery_limit}
        return QueueSpec(self.queue_name(wq.name), arguments, tuple((self.events_exchange, p) for p in wq.patterns))

    async def declare(self, channel: AbstractChannel) -> AbstractExchange:
        """Declare everything (idempotent; needs the configure permission) and return the events exchange."""
        exchanges = {}
        for spec in self.exchanges():
            exchanges[spec.name] = await channel.declare_exchange(spec.name, spec.kind, durable=True)
        for queue_spec in self.queues():
            await self._declare_queue(channel, queue_spec, exchanges)
        return exchanges[self.events_exchange]

    async def check(self, connection: aio_pika.abc.AbstractConnection) -> None:
        """Check that everything exists, without the right to create it; ConfigurationError naming what is missing."""
        names = [*((e.name, "exchange") for e in self.exchanges()), *((q.name, "queue") for q in self.queues())]
        for name, kind in names:
            channel = await connection.channel()
            try:
                if kind == "exchange":
                    await channel.declare_exchange(name, passive=True)
                else:
                    await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity as e:
                raise not_found(kind, name, e) from e
            finally:
                if not channel.is_closed:
                    await channel.close()

    async def _declare_queue(
        self, channel: AbstractChannel, spec: QueueSpec, exchanges: dict[str, AbstractExchange]
    ) -> AbstractQueue:
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for exchange, key in spec.bindings:
            await queue.bind(exchanges[exchange], routing_key=key)
        return queue

    def definitions(self, vhost: str) -> dict[str, list[dict[str, Any]]]:
        """The topology as RabbitMQ definitions (the `exchanges`, `queues` and `bindings` of a definitions file)."""
        return {
            "exchanges": [{"name": e.name, "vhost": vhost, "type": e.kind, "durable": True, "auto_delete": False,
                           "internal": False, "arguments": {}} for e in self.exchanges()],
            "queues": [{"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False,
                        "arguments": q.arguments} for q in self.queues()],
            "bindings": [{"source": exchange, "vhost": vhost, "destination": q.name, "destination_type": "queue",
                          "routing_key": key, "arguments": {}} for q in self.queues() for exchange, key in q.bindings],
        }

    async def delete(self, channel: AbstractChannel) -> None:
        """Remove everything this topology declared (tests, decommissioned sites)."""
        for queue_spec in self.queues():
            await channel.queue_delete(queue_spec.name)
        for spec in self.exchanges():
            await channel.exchange_delete(spec.name)
