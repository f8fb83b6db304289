"""The work handler for `observation.announced`: copy the announced files in, verify them, mint each once.

An announcement no store has room for is not refused: it waits (`waiting.WaitingRoom`) and is ingested by itself
once room appears.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from services.ingest.ingester import DoneOnce, Ingester, Provenance, Transaction, caused_by_fields
from services.ingest.minting import Claim, Refusal
from services.ingest.options import IngestOptions
from services.ingest.path_ingest import PathJob, default_name, ingest_paths
from services.ingest.stores import NoRoom
from services.ingest.waiting import WaitingRoom
from shared.bus import BatchedWork, Once
from shared.bus.topology import WorkQueue
from shared.errors import MalformedEvent
from shared.events import Event
from shared.events.types import ObservationAnnounced

log = structlog.get_logger()

ANNOUNCED_QUEUE = WorkQueue("ingest.announced", ("*.observation.announced.#",))


def announcement_job(event: Event, tx: Transaction, once: DoneOnce) -> PathJob:
    """What an announcement asks for: its claim, its source, its staging entry (one per event, so a redelivery
    after a crash starts again in the same place) and who brings it; it waits for room rather than be refused."""
    announced = event.payload
    if not isinstance(announced, ObservationAnnounced):
        raise MalformedEvent(f"the ingest.announced queue got a {event.type} event; check its bindings")
    claim = Claim(
        name=announced.name or default_name(announced.path), file_type=announced.file_type,
        size=announced.expected_size, checksum=announced.expected_checksum,
    )
    who = Provenance(uploader=event.producer, caused_by=event)
    return PathJob(claim, announced.path, f"ann-{event.event_id.hex}", who, tx, once, waits_for_room=True)


def announced_handler(ingester: Ingester, options: IngestOptions, waiting: WaitingRoom) -> BatchedWork:
    """A handler that ingests the announcements waiting together, each once; refusals are committed events, and
    those no store has room for are committed as waiting."""

    async def handle(deliveries: Sequence[tuple[Event, Once]]) -> list[BaseException | None]:
        results: list[BaseException | None] = [None] * len(deliveries)
        jobs: list[PathJob] = []
        positions: list[int] = []
        for position, (event, once) in enumerate(deliveries):
            try:
                jobs.append(announcement_job(event, once.transaction, once))
            except MalformedEvent as e:
                results[position] = e
                continue
            positions.append(position)
        waits: dict[int, tuple[str, NoRoom]] = {}
        for position, job, outcome in zip(positions, jobs, await ingest_paths(ingester, jobs), strict=True):
            if isinstance(outcome, BaseException):
                results[position] = outcome
            elif isinstance(outcome, NoRoom):
                waits[position] = (job.claim.name, outcome)
            elif isinstance(outcome, Refusal):
                log.info("announced_observation_refused", path=job.source, code=outcome.code.value,
                         **caused_by_fields(job.who.caused_by))
        settled = await waiting.wait_all([(*deliveries[p], *wait) for p, wait in waits.items()])
        for position, result in zip(waits, settled, strict=True):
            results[position] = result
        return results

    # Two batches at a time, each up to half of what is in flight: one copies while the next one gathers.
    return BatchedWork(handle, max_items=max(1, options.prefetch // 2), concurrency=2)
