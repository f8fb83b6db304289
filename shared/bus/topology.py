"""A site's RabbitMQ topology as data: the event exchange, the replayable log stream, work queues, dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from shared.settings import BusSettings


@dataclass(frozen=True)
class WorkQueue:
    """A durable quorum queue for work done once, bound to event patterns, dead-lettered after `delivery_limit`."""

    name: str
    patterns: tuple[str, ...]
    delivery_limit: int = 5


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

    async def declare(self, channel: AbstractChannel) -> AbstractExchange:
        """Declare everything (idempotent) and return the events exchange."""
        events = await channel.declare_exchange(self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        dead = await channel.declare_exchange(self.dead_letter_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        log_stream = await self.declare_stream(channel)
        await log_stream.bind(events, routing_key="#")
        dead_queue = await channel.declare_queue(
            self.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead, routing_key="#")
        for wq in self.work_queues:
            await self.declare_work_queue(channel, wq, events)
        return events

    async def declare_stream(self, channel: AbstractChannel) -> AbstractQueue:
        """The log stream: every event, kept for `stream_max_age` or up to `stream_max_bytes`."""
        return await channel.declare_queue(
            self.log_stream,
            durable=True,
            arguments={
                "x-queue-type": "stream",
                "x-max-age": self.stream_max_age,
                "x-max-length-bytes": self.stream_max_bytes,
                "x-stream-max-segment-size-bytes": self.stream_segment_bytes,
            },
        )

    async def declare_work_queue(
        self, channel: AbstractChannel, wq: WorkQueue, events: AbstractExchange
    ) -> AbstractQueue:
        """A quorum work queue bound to its patterns, dead-lettering to this site's dead-letter exchange."""
        queue = await channel.declare_queue(
            self.queue_name(wq.name),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": self.dead_letter_exchange,
                "x-delivery-limit": wq.delivery_limit,
            },
        )
        for pattern in wq.patterns:
            await queue.bind(events, routing_key=pattern)
        return queue

    async def delete(self, channel: AbstractChannel) -> None:
        """Remove everything this topology declared (tests, decommissioned sites)."""
        names = [self.log_stream, self.dead_letter_queue, *(self.queue_name(w.name) for w in self.work_queues)]
        for name in names:
            await channel.queue_delete(name)
        for exchange in (self.events_exchange, self.dead_letter_exchange):
            await channel.exchange_delete(exchange)
