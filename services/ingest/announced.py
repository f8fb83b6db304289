"""The work handler for `observation.announced`: copy the announced files in, verify them, mint each once."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from services.ingest.ingester import Ingester, Provenance
from services.ingest.minting import Claim, Refusal
from services.ingest.options import IngestOptions
from services.ingest.path_ingest import PathJob, default_name, ingest_paths
from shared.bus import BatchedWork, Once
from shared.bus.topology import WorkQueue
from shared.errors import MalformedEvent
from shared.events import Event
from shared.events.types import ObservationAnnounced

log = structlog.get_logger()

ANNOUNCED_QUEUE = WorkQueue("ingest.announced", ("*.observation.announced.#",))


def announced_handler(ingester: Ingester, options: IngestOptions) -> BatchedWork:
    """A handler that ingests the announcements waiting together, each once; refusals are committed events."""

    async def handle(deliveries: Sequence[tuple[Event, Once]]) -> list[BaseException | None]:
        results: list[BaseException | None] = [None] * len(deliveries)
        jobs: list[PathJob] = []
        positions: list[int] = []
        for position, (event, once) in enumerate(deliveries):
            announced = event.payload
            if not isinstance(announced, ObservationAnnounced):
                results[position] = MalformedEvent(
                    f"the ingest.announced queue got a {event.type} event; check its bindings"
                )
                continue
            claim = Claim(
                name=announced.name or default_name(announced.path), file_type=announced.file_type,
                size=announced.expected_size, checksum=announced.expected_checksum,
            )
            # One staging entry per event: a redelivery after a crash starts again in the same place.
            who = Provenance(uploader=event.producer, caused_by=event)
            jobs.append(PathJob(claim, announced.path, f"ann-{event.event_id.hex}", who, once.transaction, once))
            positions.append(position)
        for position, job, outcome in zip(positions, jobs, await ingest_paths(ingester, jobs), strict=True):
            if isinstance(outcome, BaseException):
                results[position] = outcome
            elif isinstance(outcome, Refusal):
                log.info("announced_observation_refused", path=job.source, code=outcome.code.value)
        return results

    # Two batches at a time, each up to half of what is in flight: one copies while the next one gathers.
    return BatchedWork(handle, max_items=max(1, options.prefetch // 2), concurrency=2)
