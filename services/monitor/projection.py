"""The monitor's projection: how many events of each type each site has produced, and the newest one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from shared.bus import Batched
from shared.events import Event

PROJECTION_TABLES = ("event_counts",)


async def _count_events(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    counts = Counter((e.site, e.type) for e in events)
    newest: dict[tuple[str, str], datetime] = {}
    for e in events:
        newest[(e.site, e.type)] = max(e.occurred_at, newest.get((e.site, e.type), e.occurred_at))
    await conn.executemany(
        "INSERT INTO event_counts (site, event_type, events, last_occurred_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (site, event_type) DO UPDATE SET events = event_counts.events + EXCLUDED.events,"
        " last_occurred_at = GREATEST(event_counts.last_occurred_at, EXCLUDED.last_occurred_at)",
        [(site, event_type, n, newest[(site, event_type)]) for (site, event_type), n in sorted(counts.items())],
    )


count_events = Batched(_count_events)
