"""The one verification path every way in shares: stage the bytes (one pass), check them, commit and mint.

A copy or upload ends in one of three outcomes: a new file (bytes renamed into main, then ONE transaction
with the files row, the instance row and the file.minted and instance.created events), the existing file
(same name and checksum: nothing changes, nothing is emitted), or a refusal (staged bytes removed, only an
ingest.rejected event committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from services.ingest.digest import TreeRefused, copy_tree_and_digest
from services.ingest.hygiene import StagingLocks
from services.ingest.minting import (
    Claim,
    Measured,
    Refusal,
    RefusalCode,
    check_size,
    decide_mint,
)
from services.ingest.observations import parse_observation
from services.ingest.onepass import MD5, XXH3_128, copy_and_checksum
from services.ingest.options import IngestOptions
from services.ingest.repository import NewFile, find_file, forget_upload, insert_file, insert_instance
from services.ingest.staging import StagingArea
from services.ingest.storage import StoreSet
from services.ingest.stores import NoStoreAvailable
from shared.bus import append_events
from shared.events import Event, Payload
from shared.events.types import FileMinted, IngestRejected, InstanceCreated

log = structlog.get_logger()

Transaction = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
EventFactory = Callable[[Payload, Event | None], Event]


@dataclass(frozen=True)
class Staged:
    """Bytes in a store's staging area, measured on the way in."""

    upload_id: str
    store: str
    path: Path
    measured: Measured
    is_directory: bool = False


@dataclass(frozen=True)
class Minted:
    """The file that now exists under the claimed name; `created` is False for an idempotent return."""

    name: str
    created: bool


Outcome = Minted | Refusal


@dataclass(frozen=True)
class Provenance:
    """Who brought the file in and what caused it: the uploader, free-form metadata, the causing event."""

    uploader: str
    metadata: dict[str, Any] | None = None
    caused_by: Event | None = None


def algorithms_for(claim: Claim, want_md5: bool = False) -> tuple[str, ...]:
    """xxh3-128 always (it is what files are recorded with); md5 too when claimed or asked for."""
    return (XXH3_128, MD5) if want_md5 or claim.algorithm == MD5 else (XXH3_128,)


class Ingester:
    """Stages, verifies and mints files into the site's stores."""

    def __init__(
        self, *, site: str, pool: asyncpg.Pool, locks: StagingLocks, stores: StoreSet, options: IngestOptions,
        make_event: EventFactory,
    ) -> None:
        self.site = site
        self.locks = locks
        self.pool = pool
        self.stores = stores
        self.options = options
        self._make_event = make_event

    def plain_transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A transaction on the service's pool (the HTTP ways in; work handlers use `once.transaction`)."""
        return _pool_transaction(self.pool)

    async def refuse(self, tx: Transaction, refusal: Refusal, *, name: str | None, path: str | None = None,
                     upload_id: str | None = None, caused_by: Event | None = None) -> Refusal:
        """Commit the ingest.rejected event (and nothing else); return the refusal."""
        async with tx() as conn:
            await self.record_refusal(conn, refusal, name=name, path=path, upload_id=upload_id, caused_by=caused_by)
        return refusal

    async def record_refusal(self, conn: asyncpg.Connection, refusal: Refusal, *, name: str | None,
                             path: str | None = None, upload_id: str | None = None,
                             caused_by: Event | None = None) -> None:
        """Append the ingest.rejected event in the caller's transaction."""
        payload = IngestRejected(code=refusal.code.value, reason=refusal.reason, name=name, path=path,
                                 upload_id=upload_id)
        await append_events(conn, [self._make_event(payload, caused_by)])
        log.info("ingest_rejected", code=refusal.code.value, name=name, path=path, reason=refusal.reason)

    def choose_store(self, size: int) -> str | Refusal:
        """The name of the store that takes `size` bytes, or a no_store refusal."""
        try:
            return self.stores.choose(size).name
        except NoStoreAvailable as e:
            return Refusal(RefusalCode.NO_STORE, str(e))

    async def stage_copy(self, source: Path, store: str, upload_id: str, algorithms: tuple[str, ...]) -> Staged:
        """Copy a file or directory into staging in one pass (blocking work in a thread)."""
        area = self.stores.area(store)
        return await asyncio.to_thread(_copy_into_staging, area, source, store, upload_id, algorithms)

    async def commit_staged(self, tx: Transaction, claim: Claim, staged: Staged, who: Provenance) -> Outcome:
        """Verify staged bytes against the claim and mint them, return the existing file, or refuse."""
        area = self.stores.area(staged.store)
        verdict = check_size(staged.measured.size, self.options.max_file_bytes) or decide_mint(
            claim, staged.measured, None
        )
        if isinstance(verdict, Refusal):
            await asyncio.to_thread(area.discard, staged.path)
            async with tx() as conn:
                await forget_upload(conn, staged.upload_id)
                await self.record_refusal(conn, verdict, name=claim.name, upload_id=staged.upload_id,
                                          caused_by=who.caused_by)
            return verdict
        try:
            async with tx() as conn:
                outcome = await self._mint_in(conn, claim, staged, who)
        finally:
            # Whatever happened, nothing of this attempt may stay staged (a retry stages afresh).
            await asyncio.to_thread(area.discard, staged.path)
        if isinstance(outcome, Minted) and outcome.created:
            self.stores.record_minted(staged.store, staged.measured.size)
        return outcome

    async def _mint_in(
        self, conn: asyncpg.Connection, claim: Claim, staged: Staged, who: Provenance
    ) -> Outcome:
        new = self._new_file(claim, staged, who)
        created_at = await insert_file(conn, new)  # a concurrent minter of this name makes us wait here
        await forget_upload(conn, staged.upload_id)
        if created_at is None:
            existing = await find_file(conn, claim.name)
            verdict = decide_mint(claim, staged.measured, existing)
            if isinstance(verdict, Refusal):
                await self.record_refusal(conn, verdict, name=claim.name, upload_id=staged.upload_id,
                                          caused_by=who.caused_by)
                return verdict
            log.info("ingest_already_minted", name=claim.name, checksum=new.checksum)
            return Minted(claim.name, created=False)
        # Data and rename are durable (fsyncs batched with concurrent commits) before the row that says so.
        final = await self.stores.commit(staged.store, staged.path, claim.name)
        verified_at = await insert_instance(conn, new.name, staged.store, str(final), new.size)
        minted = FileMinted(
            name=new.name, size=new.size, checksum=new.checksum, file_type=new.file_type,
            observation_id=new.observation_id, start_jd=new.start_jd, duration_s=new.duration_s,
            origin_site=new.origin_site, uploader=new.uploader, created_at=created_at,
            produced_by=(who.metadata or {}).get("produced_by"),
        )
        instance = InstanceCreated(
            file_name=new.name, site=self.site, store=staged.store, path=str(final), size=new.size,
            checksum=new.checksum, verified_at=verified_at,
        )
        await append_events(conn, [self._make_event(minted, who.caused_by), self._make_event(instance, who.caused_by)])
        log.info("file_minted", name=new.name, size=new.size, store=staged.store, uploader=new.uploader)
        return Minted(new.name, created=True)

    def _new_file(self, claim: Claim, staged: Staged, who: Provenance) -> NewFile:
        observation = parse_observation(claim.name, claim.file_type)
        checksums = staged.measured.checksums
        return NewFile(
            name=claim.name, size=staged.measured.size, checksum=checksums[XXH3_128], md5=checksums.get(MD5),
            file_type=claim.file_type, is_directory=staged.is_directory,
            observation_id=observation.observation_id if observation else None,
            start_jd=observation.start_jd if observation else None,
            duration_s=observation.duration_s if observation else None,
            origin_site=self.site, uploader=who.uploader, metadata=who.metadata,
        )


@contextlib.asynccontextmanager
async def _pool_transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn, conn.transaction():
        yield conn


def _copy_into_staging(
    area: StagingArea, source: Path, store: str, upload_id: str, algorithms: tuple[str, ...]
) -> Staged:
    staged = area.new_upload(upload_id)
    if stat.S_ISDIR(os.stat(source).st_mode):
        tree = copy_tree_and_digest(source, staged)
        return Staged(upload_id, store, staged, Measured(tree.size, {XXH3_128: tree.digest}), is_directory=True)
    copied = copy_and_checksum(source, staged, algorithms, fsync=False)  # fsynced in the commit batch
    return Staged(upload_id, store, staged, Measured(copied.size, copied.checksums))


__all__ = ["Ingester", "Minted", "Outcome", "Provenance", "Staged", "TreeRefused", "algorithms_for"]
