"""Conflicting mints: one name minted by two sites with different contents.

The catalog keeps the first file.minted it reads for a name; a later one with another checksum or size is not
dropped in silence: it is recorded in `conflicts` and announced as `file.conflicted`, through the catalog's outbox
in the projection's transaction. Each site's catalog notices on its own (each kept the one it read first).
"""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from shared.bus import append_events
from shared.events import Event, new_event
from shared.events.types import FileConflicted, FileMinted

log = structlog.get_logger()

_CONFLICT_EVENT_NAMESPACE = uuid.UUID("9b0c3a52-17f4-4c55-8d0e-3c5e2f7a6b41")
MAX_CONFLICTS = 10_000
CONFLICT_COLUMNS = ("name, kept_site, kept_checksum, kept_size, other_site, other_checksum, other_size,"
                    " other_event_id, event_id, seen_at")


def conflict_event_id(site: str, name: str, other_site: str, other_checksum: str, other_size: int) -> uuid.UUID:
    """The one id a conflict's event can have at `site`, whatever replays or redeliveries happen."""
    return uuid.uuid5(_CONFLICT_EVENT_NAMESPACE, f"{site}/{name}/{other_site}/{other_checksum}/{other_size}")


def conflict_of(kept: asyncpg.Record, minted: Event, p: FileMinted) -> FileConflicted | None:
    """The conflict between the kept file and a later mint of its name, or None if they are the same file (pure)."""
    if kept["checksum"] == p.checksum and kept["size"] == p.size:
        return None
    return FileConflicted(
        name=p.name, kept_site=kept["origin_site"], kept_checksum=kept["checksum"], kept_size=kept["size"],
        other_site=minted.site, other_checksum=p.checksum, other_size=p.size, other_event_id=minted.event_id,
    )


async def record_conflict(conn: asyncpg.Connection, minted: Event, site: str, producer: str) -> None:
    """After a file.minted whose name is known: record and announce the conflict, if it is one (once)."""
    p = minted.payload
    if not isinstance(p, FileMinted):
        raise TypeError(f"{minted.type} event carries a {type(p).__name__}, expected FileMinted")
    kept = await conn.fetchrow("SELECT origin_site, checksum, size FROM files WHERE name = $1", p.name)
    conflict = conflict_of(kept, minted, p) if kept is not None else None
    if conflict is None:
        return
    event_id = conflict_event_id(site, p.name, minted.site, p.checksum, p.size)
    inserted = await conn.fetchval(
        f"INSERT INTO conflicts ({CONFLICT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())"
        " ON CONFLICT DO NOTHING RETURNING true",
        conflict.name, conflict.kept_site, conflict.kept_checksum, conflict.kept_size, conflict.other_site,
        conflict.other_checksum, conflict.other_size, conflict.other_event_id, event_id,
    )
    if not inserted:
        return
    event = new_event(conflict, site=site, producer=producer, caused_by=minted)
    await append_events(conn, [event.model_copy(update={"event_id": event_id})])
    log.warning("file_conflicted", name=p.name, kept_site=conflict.kept_site, other_site=conflict.other_site,
                event_id=str(event_id))


async def list_conflicts(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """The latest conflicts, newest first."""
    return await pool.fetch(f"SELECT {CONFLICT_COLUMNS} FROM conflicts ORDER BY seen_at DESC, name LIMIT $1", limit)
