"""The transfer service's stream handlers: what it knows of files and instances everywhere, and which names to
evaluate against the standing orders. Everything is written in the consumer's transaction (with its checkpoint and
handled ids), so a crash or a replay changes nothing twice.

Only this site's own new instances are worth evaluating (an order applies to files this site holds); instances
anywhere are facts the dispatcher reads (a copy at the destination ends a transfer; a copy at a via peer is
sent on from there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import asyncpg

from shared.bus.stream_consumer import Batched, StreamHandler
from shared.events import Event
from shared.events.types import FileMinted, InstanceCreated, InstanceDeleted

PROJECTION_TABLES = ("files", "instances", "pending_evaluations")
RESET_PROJECTION = [f"TRUNCATE {', '.join(PROJECTION_TABLES)}"]
P = TypeVar("P")


def transfer_handlers(site: str) -> Mapping[str, StreamHandler]:
    """Handlers by event type for the transfer service of `site`."""

    async def on_minted(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        rows = [(p.name, p.size, p.checksum, p.model_dump_json()) for p in _payloads(events, FileMinted)]
        await conn.executemany(
            "INSERT INTO files (name, size, checksum, minted) VALUES ($1, $2, $3, $4::jsonb)"
            " ON CONFLICT (name, checksum) DO NOTHING", rows,
        )

    async def on_created(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        payloads = _payloads(events, InstanceCreated)
        await conn.executemany(
            "INSERT INTO instances (file_name, site, store, path, checksum, verified_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (site, store, path) DO NOTHING",
            [(p.file_name, p.site, p.store, p.path, p.checksum, p.verified_at) for p in payloads],
        )
        mine = sorted({p.file_name for p in payloads if p.site == site})
        if mine:
            await conn.execute(
                "INSERT INTO pending_evaluations (file_name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", mine,
            )

    async def on_deleted(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        await conn.executemany(
            "DELETE FROM instances WHERE site = $1 AND store = $2 AND path = $3",
            [(p.site, p.store, p.path) for p in _payloads(events, InstanceDeleted)],
        )

    return {
        FileMinted.event_type: Batched(on_minted),
        InstanceCreated.event_type: Batched(on_created),
        InstanceDeleted.event_type: Batched(on_deleted),
    }


def _payloads(events: Sequence[Event], kind: type[P]) -> list[P]:
    found = [e.payload for e in events]
    wrong = [type(p).__name__ for p in found if not isinstance(p, kind)]
    if wrong:
        raise TypeError(f"expected {kind.__name__} payloads, got {', '.join(wrong)}")
    return [p for p in found if isinstance(p, kind)]
