"""The monitor's projection: how many events of each type each site has produced, and the newest one."""

from __future__ import annotations

import asyncpg

from shared.events import Event

PROJECTION_TABLES = ("event_counts",)


async def count_event(conn: asyncpg.Connection, event: Event) -> None:
    """Add one event to its (site, type) tally."""
    await conn.execute(
        "INSERT INTO event_counts (site, event_type, events, last_occurred_at) VALUES ($1, $2, 1, $3)"
        " ON CONFLICT (site, event_type) DO UPDATE SET events = event_counts.events + 1,"
        " last_occurred_at = GREATEST(event_counts.last_occurred_at, EXCLUDED.last_occurred_at)",
        event.site, event.type, event.occurred_at,
    )
