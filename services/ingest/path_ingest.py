"""Ingest from a path this server can read: the announced-observation way in and the local-path upload.

Paths are ingested in batches (the announcements waiting together): one query finds the duplicates, one the
names already minted, one round trip takes the staging locks, the copies share a few thread hops and the mints
one transaction. Each path still gets its own outcome: a refusal or an error in one touches no other.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from services.ingest.hygiene import StagingBusy
from services.ingest.ingester import (
    CopyOrder,
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
    check_size,
    decide_before_copy,
    locate_source,
)
from services.ingest.onepass import MD5
from services.ingest.options import IngestOptions
from services.ingest.repository import find_files
from services.ingest.sources import probe_source, refusal_for
from shared.bus import Once
from shared.safe_paths import PATH_MAX, Beneath


@dataclass(frozen=True)
class PathJob:
    """One path to ingest: the claim, the source, its staging id, who brings it and where its refusal commits.

    A work handler passes `tx=once.transaction` and its `once` (the mint records the event as handled).
    """

    claim: Claim
    source: str
    upload_id: str
    who: Provenance
    tx: Transaction
    once: Once | None = None
    want_md5: bool = False


def _bounded(path: str) -> str:
    """A source path as an `ingest.rejected` event carries it: no longer than any path that can exist."""
    return path if len(path) < PATH_MAX else f"{path[:PATH_MAX - 4]}..."


def default_name(path: str) -> str:
    """The file name an announcement without one gets: the last component of its path."""
    return os.path.basename(os.path.normpath(path)) if path else ""


async def ingest_path(
    ingester: Ingester, tx: Transaction, claim: Claim, source: str, upload_id: str, who: Provenance,
    *, want_md5: bool = False, once: Once | None = None,
) -> Outcome:
    """Copy `source` into a store in one pass, verify it against the claim, and mint it (or refuse)."""
    (outcome,) = await ingest_paths(ingester, [PathJob(claim, source, upload_id, who, tx, once, want_md5)])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def ingest_paths(ingester: Ingester, jobs: Sequence[PathJob]) -> list[Outcome | BaseException]:
    """`ingest_path` for many paths at once; each one's outcome, or the error its delivery is settled by."""
    results: dict[int, Outcome | BaseException] = {}
    onces = [(index, once) for index, job in enumerate(jobs) if (once := job.once) is not None]
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
    orders: dict[int, CopyOrder] = {}
    for index, (source, size) in sources.items():
        job = jobs[index]
        verdict = decide_before_copy(job.claim, existing.get(job.claim.name))
        if isinstance(verdict, AlreadyMinted):
            unchanged.append(index)
            continue
        store = ingester.choose_store(job.claim.size if job.claim.size is not None else size)
        if isinstance(verdict, Refusal):
            refusals[index] = verdict
        elif isinstance(store, Refusal):
            refusals[index] = store
        else:
            orders[index] = CopyOrder(source, store, job.upload_id, algorithms_for(job.claim, job.want_md5), size)
    if orders:
        results.update(await _copy_and_commit(ingester, jobs, orders, refusals))
    await _each(results, {index: _unchanged(jobs[index]) for index in unchanged})
    await _each(results, {index: ingester.refuse(jobs[index].tx, refusal, name=jobs[index].claim.name,
                                                 path=_bounded(jobs[index].source),
                                                 caused_by=jobs[index].who.caused_by)
                          for index, refusal in refusals.items()})
    return [results[index] for index in range(len(jobs))]


async def _copy_and_commit(
    ingester: Ingester, jobs: Sequence[PathJob], orders: dict[int, CopyOrder], refusals: dict[int, Refusal]
) -> dict[int, Outcome | BaseException]:
    """Stage the ordered copies under their locks and mint them; copies that cannot be read join `refusals`."""
    results: dict[int, Outcome | BaseException] = {}
    first = {order.upload_id: index for index, order in reversed(orders.items())}  # one writer per entry
    async with ingester.locks.hold_many(list(first)) as taken:
        for index, order in orders.items():
            if order.upload_id not in taken or first[order.upload_id] != index:
                results[index] = StagingBusy(f"upload {order.upload_id} is being staged by another worker; "
                                             "it will be retried")
        mine = [index for index, order in orders.items() if index not in results]
        staged: dict[int, Staged] = {}
        for index, copied in zip(mine, await ingester.stage_copies([orders[i] for i in mine]), strict=True):
            refusal = refusal_for(orders[index].source, copied) if isinstance(copied, Exception) else None
            if refusal is not None:
                refusals[index] = refusal  # it vanished, changed or became a link since the probe
            elif isinstance(copied, BaseException):
                results[index] = copied
            else:
                staged[index] = copied
        requests = [(jobs[i].tx, MintRequest(jobs[i].claim, staged[i], jobs[i].who, jobs[i].once)) for i in staged]
        results.update(zip(staged, await ingester.commit_staged_many(requests), strict=True))
    return results


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
    """Where the source lies and its size (0 for a directory), or why it cannot be ingested (blocking: it opens it)."""
    claim = job.claim
    refusal = check_claim(claim, options.max_file_bytes)
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
    if not probe.is_directory:
        refusal = check_size(probe.size, options.max_file_bytes)
        if refusal is None and claim.size is not None and claim.size != probe.size:
            refusal = Refusal(RefusalCode.SIZE_MISMATCH, f"{claim.name}: announced {claim.size} bytes but "
                              f"{source} holds {probe.size}; announce it again once it is complete")
    return refusal or (source, probe.size)
