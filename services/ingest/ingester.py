"""The one verification path every way in shares: stage the bytes (one pass), check them, commit and mint.

A copy or upload ends in one of three outcomes: a new file (bytes renamed into main, then ONE transaction
with the files row, the instance row and the file.minted and instance.created events — shared with the other
files that concurrent ingests are minting at the same moment), the existing file
(same name and checksum: nothing changes, nothing is emitted), or a refusal (staged bytes removed, only an
ingest.rejected event committed).

A replica (a copy of a file minted at another site) takes the same path with its origin's record: its files row is
the origin's (origin site, uploader, creation time, observation), and only its instance.created is emitted here —
the file was minted at its origin, whose file.minted reaches every site by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from services.ingest.digest import TreeRefused
from services.ingest.hygiene import StagingLocks
from services.ingest.minting import (
    Claim,
    Measured,
    Refusal,
    check_size,
    decide_mint,
)
from services.ingest.observations import parse_observation
from services.ingest.onepass import MD5, XXH3_128
from services.ingest.options import IngestOptions
from services.ingest.repository import (
    NewFile,
    file_document_of,
    find_file,
    forget_uploads,
    insert_files,
    insert_instances,
)
from services.ingest.sources import copy_source
from services.ingest.staging import StagingArea
from services.ingest.storage import StoreSet
from services.ingest.stores import NoRoom
from shared.api.ingest import IngestedFile, ReplicaFile
from shared.batching import Batcher
from shared.bus import DoneOnce, Once, append_events
from shared.events import Event, Payload
from shared.events.types import FileMinted, IngestRejected, InstanceCreated
from shared.safe_paths import Beneath

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
class MintRequest:
    """Staged bytes that passed the pre-commit checks, waiting to be minted in the next batch.

    `origin` is set for a replica: the record of the file as its origin site minted it (the claim is made from it).
    """

    claim: Claim
    staged: Staged
    who: Provenance
    once: DoneOnce | None = None
    origin: ReplicaFile | None = None


@dataclass(frozen=True)
class Minted:
    """The file that now exists under the claimed name; `created` is False for an idempotent return.

    A new file carries its document (as the HTTP API shows it), known without reading it back.
    """

    name: str
    created: bool
    document: IngestedFile | None = field(default=None, compare=False)


# NoRoom: no store could take the file (when announced, or at the mint): a condition to wait out, not a verdict.
Outcome = Minted | Refusal | NoRoom


@dataclass(frozen=True)
class Provenance:
    """Who brought the file in and what caused it: the uploader, free-form metadata, the causing event."""

    uploader: str
    metadata: dict[str, Any] | None = None
    caused_by: Event | None = None


def caused_by_fields(event: Event | None) -> dict[str, str]:
    """The log fields naming the event an ingest answers (none for an HTTP upload)."""
    return {} if event is None else {"event_id": str(event.event_id)}


def replica_claim(record: ReplicaFile) -> Claim:
    """What the bytes of a replica must be: the name, type, size and checksum its origin minted."""
    return Claim(record.name, record.file_type, record.size, record.checksum)


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
        self._mints: Batcher[MintRequest, Outcome] = Batcher(self._mint_batch)

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
        log.info("ingest_rejected", code=refusal.code.value, name=name, path=path, reason=refusal.reason,
                 **caused_by_fields(caused_by))

    async def stage_copies(self, orders: Sequence[CopyOrder]) -> list[Staged | BaseException]:
        """Copy files or directories into staging in one pass each; each one's Staged, or the error it met.

        The copies run in up to `copy_threads` threads, each taking a share balanced by size in one hand-off
        (many small files cost a few thread hops, not one each; large ones still copy side by side).
        """
        groups = _balanced(orders, self.options.copy_threads)
        direct = self.options.direct_io
        done = await asyncio.gather(*(asyncio.to_thread(_copy_group, self.stores, group, direct) for group in groups))
        staged: dict[int, Staged | BaseException] = {}
        for group, results in zip(groups, done, strict=True):
            staged.update(zip((index for index, _ in group), results, strict=True))
        return [staged[index] for index in range(len(orders))]

    async def commit_staged(
        self, tx: Transaction, claim: Claim, staged: Staged, who: Provenance, once: DoneOnce | None = None,
        *, origin: ReplicaFile | None = None,
    ) -> Outcome:
        """Verify staged bytes against the claim and mint them (as a replica of `origin`'s file when given), return
        the existing file, or refuse.

        A work handler passes its `once`: the event is then recorded as handled in the (batched) minting
        transaction, and AlreadyHandled is raised for a duplicate.
        """
        (outcome,) = await self.commit_staged_many([(tx, MintRequest(claim, staged, who, once, origin))])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def commit_staged_many(
        self, requests: Sequence[tuple[Transaction, MintRequest]]
    ) -> list[Outcome | BaseException]:
        """`commit_staged` for many: mismatches refused one by one (in their `tx`), the rest minted together
        (NoRoom for those their store cannot hold after all). Refusing or minting leaves pending HTTP uploads as
        the upload rule says: a mismatch keeps them (send the bytes again), a mint or a name conflict ends them."""
        outcomes: list[Outcome | BaseException | None] = [None] * len(requests)
        refused: list[tuple[int, Refusal]] = []
        to_mint: list[int] = []
        for index, (_tx, request) in enumerate(requests):
            verdict = check_size(request.staged.measured.size, self.options.max_file_bytes) or decide_mint(
                request.claim, request.staged.measured, None
            )
            if isinstance(verdict, Refusal):
                refused.append((index, verdict))
            else:
                to_mint.append(index)
        try:
            # Minted together with whatever concurrent ingests are ready: one transaction, one fsync round.
            minted = await self._mints.submit_each([requests[index][1] for index in to_mint])
            for index, outcome in zip(to_mint, minted, strict=True):
                outcomes[index] = outcome
        finally:
            # Whatever happened, nothing of these attempts may stay staged (a retry stages afresh); a minted
            # file was renamed away, so there is nothing to remove then.
            leftovers = [requests[index][1].staged for index, outcome in enumerate(outcomes)
                         if not (isinstance(outcome, Minted) and outcome.created)]
            if leftovers:
                await asyncio.to_thread(self._discard_all, leftovers)
        for index, refusal in refused:
            tx, request = requests[index]
            try:
                outcomes[index] = await self._refuse_staged(tx, request, refusal)
            except Exception as e:  # this request's error only; the others stand
                outcomes[index] = e
        return [o if o is not None else RuntimeError("commit left a request undecided") for o in outcomes]

    def _discard_all(self, leftovers: Sequence[Staged]) -> None:
        for staged in leftovers:
            self.stores.area(staged.store).discard(staged.path)

    async def _refuse_staged(self, tx: Transaction, request: MintRequest, refusal: Refusal) -> Refusal:
        async with tx() as conn:
            await self.record_refusal(conn, refusal, name=request.claim.name, upload_id=request.staged.upload_id,
                                      caused_by=request.who.caused_by)
        return refusal

    async def _mint_batch(self, requests: list[MintRequest]) -> list[Outcome | BaseException]:
        """ONE transaction for every request: handled ids, files rows, the commits into main, instances, events."""
        outcomes: list[Outcome | BaseException | None] = [None] * len(requests)
        # Rows are inserted in name order, so two processes' batches never wait on each other in a cycle.
        order = sorted(range(len(requests)), key=lambda i: requests[i].claim.name)
        async with self.pool.acquire() as conn, conn.transaction():
            # The stores are locked first (in name order, like every reservation): nothing is minted into a store
            # its capacity cannot hold, counting every reservation; what does not fit is handed back undone.
            stagings = [requests[i].staged for i in order]
            room = await self.stores.admit(conn, [(s.upload_id, s.store, s.measured.size) for s in stagings])
            for index, no_room in zip(order, room, strict=True):
                outcomes[index] = no_room
            handled = [(i, once) for i in order if outcomes[i] is None and (once := requests[i].once) is not None]
            for (index, once), fresh in zip(handled, await _record_done(conn, [o for _, o in handled]), strict=True):
                if not fresh:
                    outcomes[index] = once.duplicate()
            live = [i for i in order if outcomes[i] is None]
            news = {i: self._new_file(requests[i]) for i in live}
            created = await insert_files(conn, [news[i] for i in live])  # concurrent minters of a name wait here
            # Minted, or the name taken (the same file, or another one): the upload or copy is over, and its
            # reservation with it.
            await forget_uploads(conn, [requests[i].staged.upload_id for i in live])
            fresh_files: list[tuple[int, NewFile, datetime]] = []
            for index in live:
                created_at = created.pop(news[index].name, None)  # a name twice in the batch: the first gets it
                if created_at is None:
                    outcomes[index] = await self._existing_name(conn, requests[index], news[index])
                else:
                    fresh_files.append((index, news[index], created_at))
            events, documents = await self._commit_fresh(conn, [(requests[i], new, at) for i, new, at in fresh_files])
            await append_events(conn, events)
        for index, new, _created_at in fresh_files:
            outcomes[index] = Minted(new.name, created=True, document=documents[new.name])
            self.stores.record_minted(requests[index].staged.store, new.size)
        return [o if o is not None else RuntimeError("mint batch left a request undecided") for o in outcomes]

    async def _existing_name(self, conn: asyncpg.Connection, request: MintRequest, new: NewFile) -> Outcome:
        """The name was taken (earlier, or by another file of this batch): the same file, or a refusal."""
        claim, staged = request.claim, request.staged
        verdict = decide_mint(claim, staged.measured, await find_file(conn, claim.name))
        if isinstance(verdict, Refusal):
            await self.record_refusal(conn, verdict, name=claim.name, upload_id=staged.upload_id,
                                      caused_by=request.who.caused_by)
            return verdict
        log.info("ingest_already_minted", name=claim.name, checksum=new.checksum,
                 **caused_by_fields(request.who.caused_by))
        return Minted(claim.name, created=False)

    async def _commit_fresh(
        self, conn: asyncpg.Connection, fresh: list[tuple[MintRequest, NewFile, datetime]]
    ) -> tuple[list[Event], dict[str, IngestedFile]]:
        """Commit the new files into main (durable before the rows say so), insert instances; their events and
        their documents (as `file_document` would read them back)."""
        finals: dict[str, Path] = {}
        for store in sorted({request.staged.store for request, _, _ in fresh}):
            mine = [(request.staged.path, new.name) for request, new, _ in fresh if request.staged.store == store]
            for (_path, name), final in zip(mine, await self.stores.commit_many(store, mine), strict=True):
                finals[name] = final
        verified = await insert_instances(
            conn, [(new.name, request.staged.store, str(finals[new.name]), new.size) for request, new, _ in fresh]
        )
        events: list[Event] = []
        documents: dict[str, IngestedFile] = {}
        for request, new, created_at in fresh:
            store, final_path, who = request.staged.store, str(finals[new.name]), request.who
            if request.origin is None:  # a replica was minted at its origin: its file.minted is the origin's
                minted = FileMinted(
                    name=new.name, size=new.size, checksum=new.checksum, file_type=new.file_type,
                    observation_id=new.observation_id, start_jd=new.start_jd, duration_s=new.duration_s,
                    origin_site=new.origin_site, uploader=new.uploader, created_at=created_at,
                    produced_by=(who.metadata or {}).get("produced_by"),
                )
                events.append(self._make_event(minted, who.caused_by))
            instance = InstanceCreated(
                file_name=new.name, site=self.site, store=store, path=final_path, size=new.size,
                checksum=new.checksum, verified_at=verified[new.name],
            )
            events.append(self._make_event(instance, who.caused_by))
            documents[new.name] = file_document_of(new, created_at, [(store, final_path, new.size, verified[new.name])])
            # Files of one batch are minted together: each line names its own cause, not the batch's first.
            log.info("file_minted" if request.origin is None else "replica_recorded", name=new.name, size=new.size,
                     store=store, uploader=new.uploader, origin_site=new.origin_site, delivered_by=who.uploader,
                     **caused_by_fields(who.caused_by))
        return events, documents

    def _new_file(self, request: MintRequest) -> NewFile:
        claim, staged, who, origin = request.claim, request.staged, request.who, request.origin
        checksums = staged.measured.checksums
        if origin is not None:  # the file as its origin minted it; the bytes were verified against its checksum
            return NewFile(
                name=claim.name, size=staged.measured.size, checksum=checksums[XXH3_128], md5=checksums.get(MD5),
                file_type=origin.file_type, is_directory=staged.is_directory, observation_id=origin.observation_id,
                start_jd=origin.start_jd, duration_s=origin.duration_s, origin_site=origin.origin_site,
                uploader=origin.uploader, metadata=replica_metadata(origin, who), created_at=origin.created_at,
            )
        observation = parse_observation(claim.name, claim.file_type)
        return NewFile(
            name=claim.name, size=staged.measured.size, checksum=checksums[XXH3_128], md5=checksums.get(MD5),
            file_type=claim.file_type, is_directory=staged.is_directory,
            observation_id=observation.observation_id if observation else None,
            start_jd=observation.start_jd if observation else None,
            duration_s=observation.duration_s if observation else None,
            origin_site=self.site, uploader=who.uploader, metadata=who.metadata,
        )


def replica_metadata(origin: ReplicaFile, who: Provenance) -> dict[str, Any]:
    """A replica's files.metadata: its origin's produced_by, and which account delivered it here."""
    metadata: dict[str, Any] = {"delivered_by": who.uploader}
    if origin.produced_by is not None:
        metadata["produced_by"] = origin.produced_by
    return metadata


async def _record_done(conn: asyncpg.Connection, dones: Sequence[DoneOnce]) -> list[bool]:
    """Record each piece of work as done (work events' ids in one statement); False for those done already."""
    onces = [d for d in dones if isinstance(d, Once)]
    fresh = dict(zip(map(id, onces), await Once.record_all(conn, onces), strict=True))
    return [fresh[id(d)] if isinstance(d, Once) else await d.record(conn) for d in dones]


@contextlib.asynccontextmanager
async def _pool_transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn, conn.transaction():
        yield conn


@dataclass(frozen=True)
class CopyOrder:
    """A source to copy into a store's staging area under an upload id, with the checksums to compute."""

    source: Beneath  # a path beneath a source root, opened without following links
    store: str
    upload_id: str
    algorithms: tuple[str, ...]
    size: int  # for sharing the copies out between threads


def _balanced(orders: Sequence[CopyOrder], threads: int) -> list[list[tuple[int, CopyOrder]]]:
    """Orders (with their index) shared between at most `threads` groups, largest first to the lightest group."""
    groups: list[list[tuple[int, CopyOrder]]] = [[] for _ in range(min(threads, len(orders)))]
    loads = [0] * len(groups)
    for index, order in sorted(enumerate(orders), key=lambda entry: -entry[1].size):
        lightest = loads.index(min(loads))
        groups[lightest].append((index, order))
        loads[lightest] += max(order.size, 1)
    return groups


def _copy_group(stores: StoreSet, group: list[tuple[int, CopyOrder]], direct: bool) -> list[Staged | BaseException]:
    results: list[Staged | BaseException] = []
    for _index, order in group:
        try:
            results.append(_copy_into_staging(stores.area(order.store), order, direct))
        except Exception as e:  # this copy's error only; the group's other copies go on
            results.append(e)
    return results


def _copy_into_staging(area: StagingArea, order: CopyOrder, direct: bool) -> Staged:
    staged = area.new_upload(order.upload_id)
    # Opened beneath its source root and read through that descriptor only (services/ingest/sources.py); fsynced
    # here, in the copy's own thread: concurrent copies' fsyncs share journal commits, and the mint batch's own
    # fsync of the entry then finds nothing left to write.
    copied = copy_source(order.source, staged, order.algorithms, direct=direct)
    measured = Measured(copied.size, copied.checksums)
    return Staged(order.upload_id, order.store, staged, measured, is_directory=copied.is_directory)


__all__ = ["CopyOrder", "DoneOnce", "Ingester", "Minted", "NoRoom", "Outcome", "Provenance", "Staged", "TreeRefused",
           "algorithms_for", "replica_claim"]
