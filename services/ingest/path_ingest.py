"""Ingest from a path this server can read: the announced-observation way in and the local-path upload.

Paths are ingested in batches (the announcements waiting together): one query finds the duplicates, one the
names already minted, one round trip takes the staging locks, the copies share a few thread hops and the mints
one transaction. Each path still gets its own outcome: a refusal or an error in one touches no other.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from services.ingest.hygiene import StagingBusy
from services.ingest.ingester import (
    CopyOrder,
    DoneOnce,
    Ingester,
    Minted,
    MintRequest,
    Outcome,
    Provenance,
    Staged,
    Transaction,
    algorithms_for,
)
from services.ingest.minting import (
    AlreadyMinted,
    Claim,
    Refusal,
    RefusalCode,
    check_claim,
    check_replica_claim,
    check_size,
    decide_before_copy,
    locate_source,
)
from services.ingest.onepass import MD5
from services.ingest.options import IngestOptions
from services.ingest.repository import PendingUpload, find_files, release_copies
from services.ingest.sources import probe_source, refusal_for, tree_bytes
from services.ingest.stores import NoRoom
from shared.api.ingest import ReplicaFile
from shared.bus import Once
from shared.failures import describe, is_transient
from shared.safe_paths import PATH_MAX, Beneath

log = structlog.get_logger()


@dataclass(frozen=True)
class PathJob:
    """One path to ingest: the claim, the source, its staging id, who brings it and where its refusal commits.

    A work handler passes `tx=once.transaction` and its `once` (the mint records the event as handled). A job that
    `waits_for_room` (an announcement) gets NoRoom back when no store can take it; any other is refused (no_store).
    A job with an `origin` adopts a replica of that file, minted at another site (the claim is made from it).
    """

    claim: Claim
    source: str
    upload_id: str
    who: Provenance
    tx: Transaction
    once: DoneOnce | None = None
    want_md5: bool = False
    waits_for_room: bool = False
    origin: ReplicaFile | None = None


def _bounded(path: str) -> str:
    """A source path as an `ingest.rejected` event carries it: no longer than any path that can exist."""
    return path if len(path) < PATH_MAX else f"{path[:PATH_MAX - 4]}..."


def default_name(path: str) -> str:
    """The file name an announcement without one gets: the last component of its path."""
    return os.path.basename(os.path.normpath(path)) if path else ""


async def ingest_path(
    ingester: Ingester, tx: Transaction, claim: Claim, source: str, upload_id: str, who: Provenance,
    *, want_md5: bool = False, once: Once | None = None, origin: ReplicaFile | None = None,
) -> Outcome:
    """Copy `source` into a store in one pass, verify it against the claim, and mint it (or refuse); with `origin`,
    record it as a replica of that file."""
    job = PathJob(claim, source, upload_id, who, tx, once, want_md5, origin=origin)
    (outcome,) = await ingest_paths(ingester, [job])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def ingest_paths(ingester: Ingester, jobs: Sequence[PathJob]) -> list[Outcome | BaseException]:
    """`ingest_path` for many paths at once; each one's outcome, or the error its delivery is settled by."""
    results: dict[int, Outcome | BaseException] = {}
    onces = [(index, once) for index, job in enumerate(jobs) if isinstance(once := job.once, Once)]
    for (index, once), done in zip(onces, await Once.done_among(ingester.pool, [o for _, o in onces]), strict=True):
        if done:
            results[index] = once.duplicate()
    todo = [index for index in range(len(jobs)) if index not in results]
    options = ingester.options
    probes = await asyncio.to_thread(lambda: [_precheck(options, jobs[index]) for index in todo])
    refusals: dict[int, Refusal] = {}
    sources: dict[int, tuple[Beneath, int]] = {}
    for index, probe in zip(todo, probes, strict=True):
        if isinstance(probe, Refusal):
            refusals[index] = probe
        else:
            sources[index] = probe
    existing = await find_files(ingester.pool, [jobs[index].claim.name for index in sources])
    unchanged: list[int] = []
    needs: dict[int, tuple[Beneath, int]] = {}  # where each copy reads and the bytes it reserves
    for index, (source, size) in sources.items():
        job = jobs[index]
        verdict = decide_before_copy(job.claim, existing.get(job.claim.name))
        if isinstance(verdict, AlreadyMinted):
            unchanged.append(index)
        elif isinstance(verdict, Refusal):
            refusals[index] = verdict
        else:
            needs[index] = (source, max(size, job.claim.size or 0))
    if needs:
        results.update(await _copy_and_commit(ingester, jobs, needs, refusals))
    for index, outcome in list(results.items()):
        if isinstance(outcome, NoRoom) and not jobs[index].waits_for_room:
            del results[index]
            refusals[index] = Refusal(RefusalCode.NO_STORE, outcome.reason)
    await _each(results, {index: _unchanged(jobs[index]) for index in unchanged})
    await _each(results, {index: ingester.refuse(jobs[index].tx, refusal, name=jobs[index].claim.name,
                                                 path=_bounded(jobs[index].source),
                                                 caused_by=jobs[index].who.caused_by)
                          for index, refusal in refusals.items()})
    return [results[index] for index in range(len(jobs))]


async def _copy_and_commit(
    ingester: Ingester, jobs: Sequence[PathJob], needs: dict[int, tuple[Beneath, int]], refusals: dict[int, Refusal]
) -> dict[int, Outcome | BaseException]:
    """Reserve room for the copies, stage them under their locks and mint them; copies that cannot be read join
    `refusals`, those no store has room for get NoRoom."""
    results: dict[int, Outcome | BaseException] = {}
    first = {jobs[index].upload_id: index for index in reversed(needs)}  # one writer per entry
    async with ingester.locks.hold_many(list(first)) as taken:
        for index in needs:
            if jobs[index].upload_id not in taken or first[jobs[index].upload_id] != index:
                results[index] = StagingBusy(f"upload {jobs[index].upload_id} is being staged by another worker; "
                                             "it will be retried")
        mine = [index for index in needs if index not in results]
        # Reserved while the lock is held: whoever finds a copy's reservation with its lock free (the recovery
        # after a crash) knows that nobody is copying it.
        wanted = [_copy_reservation(ingester, jobs[index], needs[index][1]) for index in mine]
        orders: dict[int, CopyOrder] = {}
        for index, place in zip(mine, await ingester.stores.reserve_copies(ingester.pool, wanted), strict=True):
            if isinstance(place, NoRoom):
                results[index] = place
            else:
                job, (source, size) = jobs[index], needs[index]
                orders[index] = CopyOrder(source, place.store, job.upload_id, algorithms_for(job.claim, job.want_md5),
                                          size)
        try:
            results.update(await _stage_and_mint(ingester, jobs, orders, refusals))
        finally:
            # Every copy of this batch is over: minted (its reservation went with the mint), refused, waiting or
            # failed. A crash before this line leaves the reservations to the recovery at start.
            await _release_reservations(ingester, [jobs[index].upload_id for index in orders])
    return results


async def _stage_and_mint(
    ingester: Ingester, jobs: Sequence[PathJob], orders: dict[int, CopyOrder], refusals: dict[int, Refusal]
) -> dict[int, Outcome | BaseException]:
    results: dict[int, Outcome | BaseException] = {}
    staged: dict[int, Staged] = {}
    for index, copied in zip(orders, await ingester.stage_copies(list(orders.values())), strict=True):
        refusal = refusal_for(orders[index].source, copied) if isinstance(copied, Exception) else None
        if refusal is not None:
            refusals[index] = refusal  # it vanished, changed or became a link since the probe
        elif isinstance(copied, OSError) and copied.errno in (errno.ENOSPC, errno.EDQUOT):
            # The disk filled up under the copy (something else wrote to it): room to wait for, not a verdict.
            results[index] = NoRoom(orders[index].size, f"the disk of store {orders[index].store!r} filled up "
                                    f"while {jobs[index].claim.name} was copied ({copied.strerror}); free space, "
                                    "raise a capacity, or bring a store online")
        elif isinstance(copied, BaseException):
            results[index] = copied
        else:
            staged[index] = copied
    requests = [(jobs[i].tx, MintRequest(jobs[i].claim, staged[i], jobs[i].who, jobs[i].once, jobs[i].origin))
                for i in staged]
    results.update(zip(staged, await ingester.commit_staged_many(requests), strict=True))
    return results


def _copy_reservation(ingester: Ingester, job: PathJob, size: int) -> PendingUpload:
    expires = datetime.now(UTC) + timedelta(seconds=ingester.options.upload_expiry_s)
    return PendingUpload(job.upload_id, "copy", job.claim.name, size, job.claim.checksum, job.claim.file_type,
                         store="", uploader=job.who.uploader, metadata=None, expires_at=expires)


async def _release_reservations(ingester: Ingester, upload_ids: list[str]) -> None:
    try:
        await release_copies(ingester.pool, upload_ids)
    except Exception as e:  # the outcomes stand; the recovery releases the rows, finding their locks free
        if not is_transient(e):
            raise
        log.warning("copy_reservations_not_released", count=len(upload_ids), error=describe(e))


async def _unchanged(job: PathJob) -> Outcome:
    async with job.tx():
        pass  # nothing changes; a work handler's transaction still records the event as handled
    return Minted(job.claim.name, created=False)


async def _each(results: dict[int, Outcome | BaseException], pending: dict[int, Awaitable[Outcome]]) -> None:
    """Await each job's own step side by side; an error is that job's result, not the batch's."""
    done = await asyncio.gather(*pending.values(), return_exceptions=True)
    for index, outcome in zip(pending, done, strict=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome  # cancellation: the whole batch stops
        results[index] = outcome


def _precheck(options: IngestOptions, job: PathJob) -> Refusal | tuple[Beneath, int]:
    """Where the source lies and the bytes its copy will take (a directory's files summed), or why it cannot be
    ingested (blocking: it opens it)."""
    claim = job.claim
    refusal = (check_claim if job.origin is None else check_replica_claim)(claim, options.max_file_bytes)
    if refusal is not None:
        return refusal
    source = locate_source(job.source, options.source_roots)
    if isinstance(source, Refusal):
        return source
    probe = probe_source(source)
    if isinstance(probe, Refusal):
        return probe
    if probe.is_directory and claim.algorithm == MD5:
        return Refusal(RefusalCode.INVALID_CHECKSUM, f"{claim.name} is a directory: its checksum is the "
                       "xxh3-128 tree digest (`obsflow upload` computes it); md5 applies to single files only")
    size = tree_bytes(source) if probe.is_directory else probe.size  # reserved before a byte moves
    refusal = check_size(size, options.max_file_bytes)
    if refusal is None and claim.size is not None and claim.size != size:
        refusal = Refusal(RefusalCode.SIZE_MISMATCH, f"{claim.name}: announced {claim.size} bytes but "
                          f"{source} holds {size}; announce it again once it is complete")
    return refusal or (source, size)
