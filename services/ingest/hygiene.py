"""Staging hygiene: one writer per staged entry (an advisory lock), the start-up sweep and upload expiry.

Every staged entry is named by its upload id, and whoever writes it holds a PostgreSQL session advisory lock
on that id for as long as it does. The lock dies with the writer's connection, so after a crash (kill -9) a
starting worker can tell a dead writer's leftovers (lock free) from a live competitor's copy (lock held).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator

import asyncpg
import structlog

from services.ingest.repository import expired_uploads, forget_upload, known_upload_ids
from services.ingest.storage import StoreSet
from shared.errors import TransientError

log = structlog.get_logger()


class StagingBusy(TransientError):
    """Another worker is staging this upload right now; try again once it is done."""


def _lock_key(schema: str, upload_id: str) -> int:
    digest = hashlib.blake2b(f"ingest-staging:{schema}:{upload_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class StagingLocks:
    """The advisory locks of the staged entries this process writes, held on a few dedicated connections.

    Dedicated connections keep a handler to one pooled connection at a time (its transaction), so no number of
    concurrent ingests can exhaust the pool while holding locks. An upload id always maps to the same one of
    them (its lock and unlock must share a session); several of them let concurrent ingests lock in parallel.
    """

    def __init__(self, conns: list[asyncpg.Connection], schema: str) -> None:
        self._slots = [(conn, asyncio.Lock()) for conn in conns]  # a connection runs one statement at a time
        self._schema = schema

    @classmethod
    async def connect(cls, database_url: str, schema: str, connections: int = 4) -> StagingLocks:
        """A lock holder with its own connections."""
        conns = [await asyncpg.connect(database_url) for _ in range(max(1, connections))]
        return cls(conns, schema)

    async def close(self) -> None:
        """Release every lock by closing the connections."""
        for conn, _guard in self._slots:
            await conn.close()

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str) -> AsyncIterator[None]:
        """Hold the right to write `upload_id`'s staged entry; StagingBusy if another writer holds it."""
        key = _lock_key(self._schema, upload_id)
        conn, guard = self._slots[key % len(self._slots)]
        async with guard:
            taken = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        if not taken:
            raise StagingBusy(f"upload {upload_id} is being staged by another worker; it will be retried")
        try:
            yield
        finally:
            # A broken connection has released the lock already: nothing is left to undo then.
            with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError):
                async with guard:
                    await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def sweep_staging(pool: asyncpg.Pool, schema: str, stores: StoreSet, *, older_than_s: float = 0.0) -> int:
    """Remove staged entries nobody is writing and no pending upload names; return how many went.

    Only entries whose lock this sweep holds are removed (never a sweep of "everything unknown"): an entry a
    competing worker creates meanwhile is that worker's, and it holds the lock.
    """
    known = set(await known_upload_ids(pool))
    cutoff = time.time() - older_than_s
    removed = 0
    async with pool.acquire() as conn:
        for area in stores.areas.values():
            for entry in await asyncio.to_thread(area.staged_entries):
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
                    await asyncio.to_thread(area.discard, area.staging_dir / upload.upload_id)
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
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
            return
        except TimeoutError:
            pass
        try:
            await expire_uploads(pool, locks, stores)
            await sweep_staging(pool, schema, stores, older_than_s=expiry_s)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning("staging_cleanup_failed", error=repr(e))
