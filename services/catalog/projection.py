"""The catalog's projection of the log: files, instances at every site, observations and their sessions.

Every handler is idempotent (replaying an event changes nothing) and order-tolerant: there are no foreign keys,
an instance may arrive before its file, and an instance.deleted before its instance.created leaves a tombstone.

Files of every site are catalogued, but only this site's observations are grouped into sessions here: a peer's
catalog groups (and closes) its own, and a session closed here starts this site's nightly pipeline. A second
file.minted of a known name with other contents is a conflict (conflicts.py), never dropped in silence.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import TypeVar

import asyncpg

from services.catalog.conflicts import record_conflict
from services.catalog.session_projection import apply_session_closed, record_observation
from services.catalog.sessions import SessionPolicy
from shared.bus.stream_consumer import StreamHandler
from shared.events import Event
from shared.events.types import FileMinted, InstanceCreated, InstanceDeleted, SessionClosed

PROJECTION_TABLES = ("files", "instances", "instance_tombstones", "observations", "sessions")
P = TypeVar("P")

RESET_PROJECTION = [f"TRUNCATE {', '.join(PROJECTION_TABLES)}"]


def projection_handlers(
    policy: SessionPolicy, site: str, producer: str, peers: Collection[str] = ()
) -> Mapping[str, StreamHandler]:
    """The stream handlers by event type; `site`/`producer` identify this catalog's own session.closed events and
    the events it emits; `peers` are the sites whose catalogs group their own observations."""

    async def on_file_minted(conn: asyncpg.Connection, event: Event) -> None:
        if await project_file_minted(conn, event, policy, group=event.site not in peers):
            return
        await record_conflict(conn, event, site, producer)

    async def on_session_closed(conn: asyncpg.Connection, event: Event) -> None:
        if event.site == site and event.producer == producer:  # other sites' catalogs group on their own
            p = _payload(event, SessionClosed)
            await apply_session_closed(conn, p.session_id, event.occurred_at, p.file_names)

    return {
        FileMinted.event_type: on_file_minted,
        InstanceCreated.event_type: project_instance_created,
        InstanceDeleted.event_type: project_instance_deleted,
        SessionClosed.event_type: on_session_closed,
    }


async def project_file_minted(
    conn: asyncpg.Connection, event: Event, policy: SessionPolicy, *, group: bool = True
) -> bool:
    """Record the file (once); a new file with an observation records and groups that observation (with `group`).
    False when the name was known already."""
    p = _payload(event, FileMinted)
    inserted = await conn.fetchval(
        "INSERT INTO files (name, size, checksum, file_type, observation_id, start_jd, duration_s, origin_site,"
        " uploader, created_at, produced_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)"
        " ON CONFLICT (name) DO NOTHING RETURNING true",
        p.name, p.size, p.checksum, p.file_type, p.observation_id, p.start_jd, p.duration_s, p.origin_site,
        p.uploader, p.created_at, None if p.produced_by is None else json.dumps(p.produced_by),
    )
    if inserted and group and p.observation_id is not None and p.start_jd is not None:
        await record_observation(conn, policy, p.observation_id, p.start_jd, p.duration_s, event.occurred_at)
    return bool(inserted)


async def project_instance_created(conn: asyncpg.Connection, event: Event) -> None:
    """Record the copy, unless it was removed after being verified (a late-delivered creation)."""
    p = _payload(event, InstanceCreated)
    await conn.execute(
        "INSERT INTO instances (file_name, site, store, path, verified_at)"
        " SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM instance_tombstones t"
        "   WHERE t.site = $2 AND t.store = $3 AND t.path = $4 AND t.deleted_at >= $5)"
        " ON CONFLICT (site, store, path) DO NOTHING",
        p.file_name, p.site, p.store, p.path, p.verified_at,
    )


async def project_instance_deleted(conn: asyncpg.Connection, event: Event) -> None:
    """Remove the copy (if it was verified before the removal) and remember the removal."""
    p = _payload(event, InstanceDeleted)
    await conn.execute(
        "DELETE FROM instances WHERE site = $1 AND store = $2 AND path = $3 AND verified_at <= $4",
        p.site, p.store, p.path, event.occurred_at,
    )
    await conn.execute(
        "INSERT INTO instance_tombstones (site, store, path, file_name, deleted_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (site, store, path) DO UPDATE SET file_name = EXCLUDED.file_name,"
        " deleted_at = GREATEST(instance_tombstones.deleted_at, EXCLUDED.deleted_at)",
        p.site, p.store, p.path, p.file_name, event.occurred_at,
    )


def _payload(event: Event, kind: type[P]) -> P:
    payload = event.payload
    if not isinstance(payload, kind):
        raise TypeError(f"{event.type} event carries a {type(payload).__name__}, expected {kind.__name__}")
    return payload
