"""The work handler for `observation.announced`: copy the announced file in, verify it, mint it once."""

from __future__ import annotations

import structlog

from services.ingest.ingester import Ingester, Provenance
from services.ingest.minting import Claim, Refusal
from services.ingest.path_ingest import default_name, ingest_path
from shared.bus import Once
from shared.bus.topology import WorkQueue
from shared.bus.work_consumer import WorkHandler
from shared.errors import MalformedEvent
from shared.events import Event
from shared.events.types import ObservationAnnounced

log = structlog.get_logger()

ANNOUNCED_QUEUE = WorkQueue("ingest.announced", ("*.observation.announced.#",))


def announced_handler(ingester: Ingester) -> WorkHandler:
    """A handler that ingests each announced observation once; refusals are committed events, not retries."""

    async def handle(event: Event, once: Once) -> None:
        announced = event.payload
        if not isinstance(announced, ObservationAnnounced):
            raise MalformedEvent(f"the ingest.announced queue got a {event.type} event; check its bindings")
        if await once.already_done():
            return
        claim = Claim(
            name=announced.name or default_name(announced.path), file_type=announced.file_type,
            size=announced.expected_size, checksum=announced.expected_checksum,
        )
        # One staging entry per event: a redelivery after a crash starts again in the same place.
        upload_id = f"ann-{event.event_id.hex}"
        who = Provenance(uploader=event.producer, caused_by=event)
        outcome = await ingest_path(ingester, once.transaction, claim, announced.path, upload_id, who, once=once)
        if isinstance(outcome, Refusal):
            log.info("announced_observation_refused", path=announced.path, code=outcome.code.value)

    return handle
