"""The transactional outbox: events are rows written with the state change; a relay publishes them in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from shared.bus.backoff import Backoff
from shared.bus.messages import event_message, publish_confirmed, wait_for_log
from shared.bus.topology import Topology
from shared.errors import BrokerUnavailable, DatabaseUnavailable
from shared.events import Event, encode_event
from shared.failures import describe, is_transient, suppress_transient
from shared.locks import Leader, lock_key
from shared.metrics import BusMetrics
from shared.waiting import wait_any

log = structlog.get_logger()

NOTIFY_CHANNEL = "obsflow_outbox"
PUBLISHED_RETENTION_S = 7 * 86400.0
PRUNE_EVERY_S = 600.0


async def append_events(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Write `events` to the outbox inside the caller's transaction; they are published only if it commits."""
    if not events:
        return
    await conn.executemany(
        "INSERT INTO outbox (event_id, routing_key, event_type, body) VALUES ($1, $2, $3, $4)",
        [(e.event_id, e.routing_key, e.type, encode_event(e)) for e in events],
    )
    # NOTIFY is transactional: the relay wakes only once the change is committed.
    await conn.execute("SELECT pg_notify($1, current_schema())", NOTIFY_CHANNEL)


class OutboxRelay:
    """Publishes a schema's outbox in commit order with publisher confirms, then marks the rows sent.

    One relay per schema leads at a time (a session advisory lock), so order is kept across replicas.
    A crash between the broker's confirm and the mark re-publishes those events: consumers dedupe by id.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        connection: AbstractRobustConnection,
        topology: Topology,
        metrics: BusMetrics,
        *,
        batch_size: int = 1000,
        poll_interval_s: float = 2.0,
        user_id: str | None = None,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._connection = connection
        self._topology = topology
        self._metrics = metrics
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._user_id = user_id
        self._wakeup = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._log_seen_on: object = None  # the broker connection on which the log stream was last seen up
        self.published = 0
        self._pruned_at = time.monotonic()
        self._leader = Leader(pool, lock_key("outbox", schema), f"outbox relay of {schema}")

    async def _ensure_exchange(self) -> AbstractExchange:
        if not self._connection.connected.is_set():
            raise BrokerUnavailable("broker connection is down; the robust connection is reconnecting")
        if self._channel is None or self._channel.is_closed or self._exchange is None:
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await self._channel.get_exchange(self._topology.events_exchange, ensure=False)
        # The robust connection reconnects by itself: nothing is published on a new connection (a restarted broker)
        # before the log stream is up again, or the broker confirms events the log never holds.
        transport = self._connection.transport
        if transport is not self._log_seen_on:
            await wait_for_log(self._channel, self._topology)
            self._log_seen_on = transport
        return self._exchange

    async def publish_pending(self) -> int:
        """Publish every unpublished row, batch by batch, until none is left; return how many were sent."""
        total = 0
        while True:
            sent = await self._publish_batch()
            total += sent
            if sent < self._batch_size:
                return total

    async def _publish_batch(self) -> int:
        rows = await self._pool.fetch(
            "SELECT seq, event_id, routing_key, event_type, body FROM outbox"
            " WHERE published_at IS NULL ORDER BY seq LIMIT $1",
            self._batch_size,
        )
        if not rows:
            return 0
        exchange = await self._ensure_exchange()
        # Many confirms in flight at once: frames leave in call order, so the broker keeps commit order. Any one
        # unconfirmed or unroutable fails the batch: it is published again (consumers deduplicate by event id).
        await asyncio.gather(
            *(
                publish_confirmed(
                    exchange, event_message(str(r["event_id"]), r["event_type"], r["body"], user_id=self._user_id),
                    r["routing_key"],
                )
                for r in rows
            )
        )
        await self._pool.execute(
            "UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[])", [r["seq"] for r in rows]
        )
        for r in rows:
            self._metrics.published.labels(r["event_type"]).inc()
        self.published += len(rows)
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Lead the relay for this schema until `stop` is set: publish on every commit and on a slow poll."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self._lead(stop, backoff)
            except Exception as e:  # the policy point: outages are waited out, anything else ends the part
                if not is_transient(e):
                    raise
                log.warning("outbox_relay_retry", error=describe(e), delay_s=backoff.peek())
                await backoff.wait(stop)

    async def _lead(self, stop: asyncio.Event, backoff: Backoff) -> None:
        async with self._leader.leading(stop, retry_s=self._poll_interval_s, wakeup=self._wakeup) as leading:
            if not leading:
                return
            listener = self._leader.connection
            await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                while not stop.is_set():
                    if self._leader.lost():  # the session held the leadership lock: it is gone with it
                        raise DatabaseUnavailable("the relay lost its database session and its leadership")
                    self._wakeup.clear()
                    await self.publish_pending()
                    await self._prune_published()
                    self._metrics.outbox_pending.set(
                        await self._pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    )
                    backoff.reset()
                    await wait_any(stop, self._wakeup, self._poll_interval_s)
            finally:
                with suppress_transient():
                    await listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)

    async def _prune_published(self) -> None:
        """Forget published rows after the retention period (the log stream keeps the events)."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        await self._pool.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)", PUBLISHED_RETENTION_S
        )

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._schema:
            self._wakeup.set()


    async def close(self) -> None:
        """Close the relay's channel."""
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
