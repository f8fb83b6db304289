"""Announcements waiting for room: kept durably, counted in a metric, ingested by themselves once room appears.

A full store, a store brought offline or one that cannot be measured is a condition, not a verdict. An announcement
no store can take is acked with a `waiting_announcements` row (committed with its handled id, so a redelivery is a
duplicate), logged with the reason, and counted in `obsflow_ingest_announcements_waiting`. At start and after every
usage refresh, the oldest that fit the room there is now go through the same path again; the transaction that mints
or refuses one deletes its row, and that deletion is what makes it happen once, whichever process gets there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import datetime

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Gauge

from services.ingest.hygiene import StagingBusy, StagingLocks
from services.ingest.ingester import Ingester, Outcome, Transaction
from services.ingest.minting import Refusal
from services.ingest.path_ingest import PathJob, ingest_paths
from services.ingest.repository import (
    WaitingAnnouncement,
    copy_upload_ids,
    dead_letter_waiting,
    release_copies,
    still_waiting,
    take_waiting,
    wait_for_room,
    waiting_that_fit,
    waiting_totals,
)
from services.ingest.staging import StagingArea
from services.ingest.stores import NoRoom
from shared.bus import AlreadyHandled, DoneOnce, Once
from shared.errors import MalformedEvent
from shared.events import Event, decode_event, encode_event
from shared.failures import Failure, classify, describe, translate_storage_errors
from shared.periodic import every

log = structlog.get_logger()

JobOf = Callable[[Event, Transaction, DoneOnce], PathJob]
RESUMER = "ingest.waiting"  # the consumer name its dead letters carry


class WaitingTicket(DoneOnce):
    """A waiting announcement's right to be ingested once: recording it as done deletes its row."""

    def __init__(self, pool: asyncpg.Pool, event_id: uuid.UUID) -> None:
        self._pool = pool
        self.event_id = event_id

    async def record(self, conn: asyncpg.Connection) -> bool:
        """Delete the row in the caller's transaction; False if it was gone (another worker ingested it)."""
        return bool(await take_waiting(conn, [self.event_id]))

    def duplicate(self) -> AlreadyHandled:
        """The error for an announcement another worker has ingested meanwhile."""
        return AlreadyHandled(f"waiting announcement {self.event_id} was ingested already")


class WaitingRoom:
    """The announcements waiting for room: recording them, their gauges, resuming them, and freeing the room that
    crashed copies left reserved."""

    def __init__(self, ingester: Ingester, registry: CollectorRegistry, job_of: JobOf, *, batch: int) -> None:
        self._ingester = ingester
        self._pool = ingester.pool
        self._job_of = job_of
        self._batch = batch
        self.count_gauge = Gauge(
            "obsflow_ingest_announcements_waiting",
            "Announcements acked but waiting for a store with room (they are ingested once room appears)",
            registry=registry,
        )
        self.bytes_gauge = Gauge(
            "obsflow_ingest_announcements_waiting_bytes", "Bytes the announcements waiting for room need",
            registry=registry,
        )

    async def wait_all(self, waits: Sequence[tuple[Event, Once, str, NoRoom]]) -> list[BaseException | None]:
        """Commit that these announcements `(event, once, file name, no room)` wait for room, each with its handled
        id; each one's error, if any (AlreadyHandled for a duplicate)."""
        if not waits:
            return []
        done = await asyncio.gather(*(self._wait(*wait) for wait in waits),
                                    return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation
        await self.count()
        return [result if isinstance(result, BaseException) else None for result in done]

    async def _wait(self, event: Event, once: Once, name: str, room: NoRoom) -> None:
        async with once.transaction() as conn:
            await wait_for_room(conn, event.event_id, encode_event(event), name, room.size, room.reason)
        log.warning("announcement_waiting_for_room", event_id=str(event.event_id), name=name, size=room.size,
                    reason=room.reason)

    async def count(self) -> tuple[int, int]:
        """Set the gauges from the database (every process shows the site's figure); (count, bytes)."""
        waiting, needed = await waiting_totals(self._pool)
        self.count_gauge.set(waiting)
        self.bytes_gauge.set(needed)
        return waiting, needed

    async def resume(self) -> int:
        """Ingest again the waiting announcements that fit the room there is now, oldest first; how many ended."""
        ended = 0
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            room = await self._ingester.stores.largest_room(self._pool)
            rows = await waiting_that_fit(self._pool, room, after, self._batch)
            if not rows:
                break
            after = (rows[-1].since, rows[-1].event_id)
            progress = await self._resume_batch(rows)
            ended += progress
            if progress == 0:
                break  # the estimate was too hopeful (another worker took the room): until the next refresh
        waiting, needed = await self.count()
        if waiting:  # every round while any waits: what a log-based alert keys on
            log.warning("announcements_waiting_for_room", waiting=waiting, bytes_needed=needed, ingested_now=ended)
        elif ended:
            log.info("waiting_announcements_all_ingested", ingested_now=ended)
        return ended

    async def _resume_batch(self, rows: Sequence[WaitingAnnouncement]) -> int:
        jobs: list[PathJob] = []
        live: list[WaitingAnnouncement] = []
        for row in rows:
            try:
                event = decode_event(row.event)
                ticket = WaitingTicket(self._pool, row.event_id)
                jobs.append(self._job_of(event, ticket.transaction, ticket))
                live.append(row)
            except MalformedEvent as e:  # stored by an older build whose event this one no longer reads
                await self._dead_letter(row, e)
        ended = len(rows) - len(live)
        still: list[tuple[uuid.UUID, int, str]] = []
        for row, outcome in zip(live, await ingest_paths(self._ingester, jobs), strict=True):
            if isinstance(outcome, NoRoom):
                still.append((row.event_id, outcome.size, outcome.reason))
            elif isinstance(outcome, AlreadyHandled):
                ended += 1
            elif isinstance(outcome, StagingBusy):
                continue  # another worker is resuming it right now
            elif isinstance(outcome, BaseException):
                if classify(outcome) is Failure.PERMANENT:
                    await self._dead_letter(row, outcome)
                    ended += 1
                else:
                    log.warning("waiting_announcement_failed", event_id=str(row.event_id), error=describe(outcome))
                    still.append((row.event_id, row.size, f"retrying after {describe(outcome)}"))
            else:
                ended += 1
                _log_ended(row, outcome)
        await still_waiting(self._pool, still)
        return ended

    async def _dead_letter(self, row: WaitingAnnouncement, error: BaseException) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await dead_letter_waiting(conn, RESUMER, row, describe(error))
        log.error("event_dead_lettered", consumer=RESUMER, event_id=str(row.event_id), reason=describe(error))

    async def release_abandoned_copies(self, locks: StagingLocks) -> int:
        """Free the room reserved by copies nobody is doing (their worker crashed): a copy's reservation whose
        staging lock is free has no writer, since every writer takes the lock first and releases its reservation
        before the lock. Their staged leftovers go too. How many were released."""
        ids = await copy_upload_ids(self._pool)
        if not ids:
            return 0
        async with locks.hold_many(ids) as abandoned:
            if not abandoned:
                return 0
            await asyncio.to_thread(_discard_staged, list(self._ingester.stores.areas.values()), abandoned)
            await release_copies(self._pool, sorted(abandoned))
        log.info("abandoned_copies_released", count=len(abandoned))
        return len(abandoned)

    async def resume_forever(self, locks: StagingLocks, stop: asyncio.Event, interval_s: float) -> None:
        """Resume what waits now, then after every usage refresh (`interval_s` at the latest), until `stop`."""

        async def resume_round() -> None:
            # The database or a disk away: they wait, durably, for the next round (`every`'s policy).
            with translate_storage_errors("resuming waiting announcements"):
                await self.release_abandoned_copies(locks)
                await self.resume()

        await every(interval_s, resume_round, stop, name="resume_waiting_announcements", first_now=True,
                    wakeup=self._ingester.stores.refreshed)


def _log_ended(row: WaitingAnnouncement, outcome: Outcome) -> None:
    if isinstance(outcome, Refusal):
        log.info("waiting_announcement_refused", event_id=str(row.event_id), name=row.name, code=outcome.code.value)
    else:
        log.info("waiting_announcement_ingested", event_id=str(row.event_id), name=row.name,
                 waited_since=row.since.isoformat())


def _discard_staged(areas: Sequence[StagingArea], upload_ids: Collection[str]) -> None:
    for area in areas:
        for upload_id in upload_ids:
            area.discard(area.staging_dir / upload_id)
