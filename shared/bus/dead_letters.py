"""Recording what a consumer could never handle: its reason, a bounded excerpt, the body's size and sha256."""

from __future__ import annotations

import hashlib
import uuid

import asyncpg

EXCERPT_BYTES = 4096  # enough to see what the message was; a 16 MiB body is not stored whole


async def record_dead_letter(
    conn: asyncpg.Connection | asyncpg.Pool, consumer: str, event_id: uuid.UUID | None, routing_key: str | None,
    reason: str, body: bytes,
) -> None:
    """Record `body` as dead for `consumer`, once: the same body again only counts another occurrence."""
    await conn.execute(
        "INSERT INTO dead_letters (consumer, event_id, routing_key, reason, excerpt, body_bytes, body_sha256)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (consumer, body_sha256) DO UPDATE"
        " SET occurrences = dead_letters.occurrences + 1, reason = EXCLUDED.reason, recorded_at = now()",
        consumer, event_id, routing_key, reason, body[:EXCERPT_BYTES], len(body), hashlib.sha256(body).digest(),
    )
