"""What the ingest service tests share: a running in-process service, files to announce, outbox readers."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from services.ingest.options import default_source_root
from services.ingest.service import SPEC
from shared.bus import Topology, publish_event
from shared.events import Event, decode_event, new_event
from shared.events.types import ObservationAnnounced
from shared.runner import ServiceRunner
from shared.settings import Settings, StoreSettings
from tests.infra import free_port_block


def ingest_settings(
    settings: Settings, store_root: Path, *, capacity_bytes: int = 0, state: str = "online", **options: Any
) -> Settings:
    """The test site's settings with one store (of that capacity and state), a data directory beside it and the
    given [services.ingest] options.

    Without `source_roots` among the options the service reads local paths from `incoming(settings)` only.
    """
    store_root.mkdir(parents=True, exist_ok=True)
    return settings.model_copy(update={
        "stores": [StoreSettings(name="main", root=store_root, capacity_bytes=capacity_bytes, state=state)],
        "data_dir": store_root.parent / "var",
        "http_base_port": free_port_block(),
        "services": {"ingest": options},
    })


def incoming(settings: Settings) -> Path:
    """The default source root (`<data_dir>/incoming`): where tests put files to announce or upload by path."""
    root = default_source_root(settings.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root


def incoming_beside(store_root: Path) -> Path:
    """`incoming(ingest_settings(settings, store_root))` without building settings: for a test's fixtures."""
    root = default_source_root(store_root.parent / "var")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.asynccontextmanager
async def running_ingest(settings: Settings) -> AsyncIterator[ServiceRunner]:
    """Start the ingest service in this process; stop it and delete its topology afterwards."""
    runner = ServiceRunner(SPEC, settings)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
        connection = await aio_pika.connect_robust(settings.amqp_url)
        async with connection, connection.channel() as channel:
            await Topology.from_settings(settings.bus, SPEC.work_queues).delete(channel)


def write_file(path: Path, data: bytes) -> Path:
    """Write `data` to `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def announcement(path: Path | str, *, site: str, file_type: str = "uvh5", **fields: Any) -> Event:
    """An observation.announced event from the correlator."""
    return new_event(ObservationAnnounced(path=str(path), file_type=file_type, **fields), site=site,
                     producer="correlator")


async def announce(amqp: aio_pika.abc.AbstractRobustConnection, settings: Settings, *events: Event) -> None:
    """Publish events to the site's exchange, as an instrument does."""
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(f"{settings.bus.prefix}.events")
        for event in events:
            await publish_event(exchange, event)


async def outbox_events(pool: asyncpg.Pool, event_type: str) -> list[Event]:
    """Every event of `event_type` the service committed to its outbox, in order."""
    rows = await pool.fetch("SELECT body FROM outbox WHERE event_type = $1 ORDER BY seq", event_type)
    return [decode_event(bytes(r["body"])) for r in rows]


async def rejection_codes(pool: asyncpg.Pool) -> list[str]:
    """The codes of the ingest.rejected events committed, in order."""
    return [e.payload.code for e in await outbox_events(pool, "ingest.rejected")]  # type: ignore[attr-defined]


async def counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """(files, instances, pending uploads) rows."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM files) f, (SELECT count(*) FROM instances) i, (SELECT count(*) FROM uploads) u"
    )
    return row["f"], row["i"], row["u"]


def staged_entries(store_root: Path) -> list[str]:
    """What is left in the store's staging area."""
    staging = store_root / "staging"
    return sorted(os.listdir(staging)) if staging.is_dir() else []


def body_json(text: str) -> Any:
    """Parse a response body."""
    return json.loads(text)
