"""Staging hygiene: one writer per staged entry (an advisory lock), the start-up sweep and upload expiry.

Every staged entry is named by its upload id, and whoever writes it holds a PostgreSQL session advisory lock
on that id for as long as it does. The lock dies with the writer's connection, so after a crash (kill -9) a
starting worker can tell a dead writer's leftovers (lock free) from a live competitor's copy (lock held).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence

import asyncpg
import structlog

from services.ingest.repository import expired_uploads, forget_upload, known_upload_ids
from services.ingest.staging import UnsafeStore
from services.ingest.storage import StoreSet
from shared.batching import Batcher
from shared.errors import TransientError
from shared.failures import suppress_transient, translate_storage_errors
from shared.locks import lock_key
from shared.periodic import every

log = structlog.get_logger()


class StagingBusy(TransientError):
    """Another worker is staging this upload right now; try again once it is done."""


def _lock_key(schema: str, upload_id: str) -> int:
    return lock_key("ingest-staging", schema, upload_id)


class StagingLocks:
    """The advisory locks of the staged entries this process writes, held on one dedicated connection.

    A dedicated connection keeps a handler to one pooled connection at a time (its transaction), so no number
    of concurrent ingests can exhaust the pool while holding locks. Locks and unlocks asked for at the same
    moment go to the server together, one statement each way (a batch of ingests pays two round trips, not
    two per file). Session locks are re-entrant, so this process also keeps the set it holds: a second writer of
    the same upload id here is refused like one in another process.
    """

    def __init__(self, database_url: str, schema: str) -> None:
        self._database_url = database_url
        self._schema = schema
        self._conn: asyncpg.Connection | None = None
        self._held: set[int] = set()
        self._requests: Batcher[tuple[bool, int], bool] = Batcher(self._run, max_items=1024)

    @classmethod
    async def connect(cls, database_url: str, schema: str) -> StagingLocks:
        """A lock holder with its own connection."""
        locks = cls(database_url, schema)
        locks._conn = await asyncpg.connect(database_url)
        return locks

    async def close(self) -> None:
        """Release every lock by closing the connection."""
        if self._conn is not None:
            await self._conn.close()

    async def _run(self, requests: list[tuple[bool, int]]) -> list[bool]:
        if self._conn is None or self._conn.is_closed():
            # The locks died with the old session; what is asked from now on is held on a new one.
            self._conn = await asyncpg.connect(self._database_url)
        releases = [key for take, key in requests if not take]
        if releases:
            await self._conn.execute("SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k", releases)
        takes = list(dict.fromkeys(key for take, key in requests if take))
        taken: set[int] = set()
        if takes:
            rows = await self._conn.fetch(
                "SELECT k FROM unnest($1::bigint[]) AS k WHERE pg_try_advisory_lock(k)", takes
            )
            taken = {r["k"] for r in rows}
        return [take and key in taken for take, key in requests]

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str) -> AsyncIterator[None]:
        """Hold the right to write `upload_id`'s staged entry; StagingBusy if another writer holds it."""
        async with self.hold_many([upload_id]) as taken:
            if upload_id not in taken:
                raise StagingBusy(f"upload {upload_id} is being staged by another worker; it will be retried")
            yield

    @contextlib.asynccontextmanager
    async def hold_many(self, upload_ids: Sequence[str]) -> AsyncIterator[set[str]]:
        """Hold the ids no other writer holds, in one round trip; yields those taken (the others are busy)."""
        keys = {upload_id: _lock_key(self._schema, upload_id) for upload_id in upload_ids}
        wanted = {u: k for u, k in keys.items() if k not in self._held}
        self._held.update(wanted.values())
        mine: dict[str, int] = {}
        try:
            granted = await self._requests.submit_many([(True, key) for key in wanted.values()])
            mine = {u: k for (u, k), ok in zip(wanted.items(), granted, strict=True) if ok}
            yield set(mine)
        finally:
            self._held.difference_update(wanted.values())
            if mine:
                # A broken connection has released the locks already: nothing is left to undo then.
                with suppress_transient():
                    await self._requests.submit_many([(False, key) for key in mine.values()])


async def sweep_staging(pool: asyncpg.Pool, schema: str, stores: StoreSet, *, older_than_s: float = 0.0) -> int:
    """Remove staged entries nobody is writing and no pending upload names; return how many went.

    Only entries whose lock this sweep holds are removed (never a sweep of "everything unknown"): an entry a
    competing worker creates meanwhile is that worker's, and it holds the lock.
    """
    known = set(await known_upload_ids(pool))
    cutoff = time.time() - older_than_s
    removed = 0
    async with pool.acquire() as conn:
        for store, area in stores.areas.items():
            try:
                entries = await asyncio.to_thread(area.staged_entries)
            except UnsafeStore as e:
                log.error("staging_sweep_refused", store=store, reason=str(e))
                continue  # removes nothing it cannot reach beneath the store root without following a link
            for entry in entries:
                if entry.name in known or (older_than_s and _mtime(entry) >= cutoff):
                    continue
                key = _lock_key(schema, entry.name)
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    continue  # a live writer's copy
                try:
                    await asyncio.to_thread(area.discard, entry)
                    removed += 1
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", key)
    if removed:
        log.info("staging_swept", removed=removed)
    return removed


def _mtime(path: os.PathLike[str]) -> float:
    try:
        return os.lstat(path).st_mtime
    except FileNotFoundError:
        return 0.0


async def expire_uploads(pool: asyncpg.Pool, locks: StagingLocks, stores: StoreSet) -> int:
    """Forget HTTP uploads whose expiry passed and remove their bytes (unless one is being written now)."""
    expired = 0
    for upload in await expired_uploads(pool):
        try:
            async with locks.hold(upload.upload_id):
                area = stores.areas.get(upload.store)
                if area is not None:
                    try:
                        await asyncio.to_thread(area.discard, area.staging_dir / upload.upload_id)
                    except UnsafeStore as e:
                        # Its bytes stay where they are (the next sweep refuses them too); the upload is over.
                        log.error("expired_upload_not_removed", upload_id=upload.upload_id, reason=str(e))
                await forget_upload(pool, upload.upload_id)
                expired += 1
                log.info("upload_expired", upload_id=upload.upload_id, name=upload.name)
        except StagingBusy:
            continue  # its bytes are arriving right now; the PUT decides its fate
    return expired


async def keep_staging_clean(
    pool: asyncpg.Pool, locks: StagingLocks, schema: str, stores: StoreSet, stop: asyncio.Event, *,
    interval_s: float, expiry_s: float,
) -> None:
    """Every `interval_s`: expire abandoned uploads and remove staged leftovers older than `expiry_s`."""

    async def clean() -> None:
        with translate_storage_errors("cleaning the staging areas"):
            await expire_uploads(pool, locks, stores)
            await sweep_staging(pool, schema, stores, older_than_s=expiry_s)

    await every(interval_s, clean, stop, name="staging_cleanup")
