"""A small projection and event factory the foundation tests share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from shared.bus import Batched
from shared.events import Event, new_event
from shared.events.types import FileMinted

PROJECTION_DDL = (
    "CREATE TABLE IF NOT EXISTS minted (name text PRIMARY KEY, size bigint NOT NULL, checksum text NOT NULL,"
    " applied int NOT NULL DEFAULT 1)"
)
RESET = ["TRUNCATE minted"]


def minted(i: int, site: str = "karoo", file_type: str = "uvh5") -> Event:
    """A file.minted event for the i-th HERA-like file."""
    jd = 2459122.30000 + i * 0.00018
    return new_event(
        FileMinted(
            name=f"zen.{jd:.5f}.sum.{file_type}", size=1000 + i, checksum=f"xxh3-128:{i:032x}", file_type=file_type,
            origin_site=site, uploader="test", created_at=datetime(2026, 11, 22, tzinfo=UTC),
            observation_id=f"zen.{jd:.5f}", start_jd=jd,
        ),
        site=site, producer="ingest",
    )


async def project_minted(conn: asyncpg.Connection, event: Event) -> None:
    """Counts applications, so a duplicate application would show as applied = 2."""
    p = event.payload
    await conn.execute(
        "INSERT INTO minted (name, size, checksum) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET applied = minted.applied + 1",
        p.name, p.size, p.checksum,  # type: ignore[attr-defined]
    )


async def snapshot(pool: asyncpg.Pool) -> list[tuple[str, int, str, int]]:
    """The projection's rows, in a stable order."""
    rows = await pool.fetch("SELECT name, size, checksum, applied FROM minted ORDER BY name")
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def _project_minted_run(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    await conn.executemany(
        "INSERT INTO minted (name, size, checksum) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET applied = minted.applied + 1",
        [(e.payload.name, e.payload.size, e.payload.checksum) for e in events],  # type: ignore[attr-defined]
    )


project_minted_batched = Batched(_project_minted_run)
