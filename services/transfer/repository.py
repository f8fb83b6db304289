"""The transfer service's SQL: standing orders, the transfers they want, batches and their attempts.

A transfer's state is derived in SQL from facts (TRANSFER_STATE), never kept in a column: done iff the destination
said it holds the file (delivered_at) or an instance at the destination is known; in_flight iff one of its attempts
has no outcome yet; failed iff neither and its attempts reached max_attempts; queued otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from services.transfer.orders import OrderRequest

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool

ORDER_COLUMNS = ("order_id, label, search, destination, store, manager, priority, created_by, created_at, paused_at,"
                 " deleted_at")
DELIVERED = ("delivered", "already")  # attempt outcomes that leave a copy at the destination
OUTCOMES = (*DELIVERED, "failed")

# $1 is max_attempts in every query that uses it.
TRANSFER_STATE = """CASE
    WHEN t.delivered_at IS NOT NULL OR EXISTS (
        SELECT 1 FROM instances i WHERE i.file_name = t.file_name AND i.site = t.destination) THEN 'done'
    WHEN EXISTS (
        SELECT 1 FROM attempts a WHERE a.file_name = t.file_name AND a.destination = t.destination
        AND a.outcome IS NULL) THEN 'in_flight'
    WHEN t.attempts >= $1 THEN 'failed'
    ELSE 'queued' END"""
TRANSFER_COLUMNS = ("file_name, destination, order_ids, requested_by, priority, created_at, attempts, next_attempt_at,"
                    " last_error, last_attempt_at, delivered_at, forwarded_at")


@dataclass(frozen=True)
class Page:
    """Which transfers a listing shows: a state, a destination, after a (file_name, destination) key, how many."""

    state: str | None = None
    destination: str | None = None
    after: tuple[str, str] | None = None
    limit: int = 100


def _order_of(row: asyncpg.Record) -> dict[str, Any]:
    return {**dict(row), "search": json.loads(row["search"]), "paused": row["paused_at"] is not None}


def _order(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return None if row is None else _order_of(row)


async def insert_order(conn: Db, order_id: str, request: OrderRequest, created_by: str) -> dict[str, Any]:
    """Store a new standing order; the stored row (with `paused`)."""
    row = await conn.fetchrow(
        "INSERT INTO orders (order_id, label, search, destination, store, manager, priority, created_by)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {ORDER_COLUMNS}",
        order_id, request.label, json.dumps(request.search), request.destination, request.store, request.manager,
        request.priority, created_by,
    )
    return _order_of(row)


async def list_orders(conn: Db) -> list[dict[str, Any]]:
    """The live (not deleted) orders, oldest first."""
    rows = await conn.fetch(f"SELECT {ORDER_COLUMNS} FROM orders WHERE deleted_at IS NULL"
                            " ORDER BY created_at, order_id")
    return [_order_of(row) for row in rows]


async def get_order(conn: Db, order_id: str) -> dict[str, Any] | None:
    """A live order, or None (unknown or deleted)."""
    return _order(await conn.fetchrow(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1 AND deleted_at IS NULL", order_id))


async def pause_order(conn: Db, order_id: str) -> dict[str, Any] | None:
    """Pause a live order (a paused one stays paused since its first pause); None if there is no such order."""
    return _order(await conn.fetchrow(
        "UPDATE orders SET paused_at = COALESCE(paused_at, now()) WHERE order_id = $1 AND deleted_at IS NULL"
        f" RETURNING {ORDER_COLUMNS}", order_id))


async def resume_order(conn: Db, order_id: str) -> dict[str, Any] | None:
    """Resume a live order (a running one is left as it is); None if there is no such order."""
    return _order(await conn.fetchrow(
        f"UPDATE orders SET paused_at = NULL WHERE order_id = $1 AND deleted_at IS NULL RETURNING {ORDER_COLUMNS}",
        order_id))


async def delete_order(conn: Db, order_id: str) -> dict[str, Any] | None:
    """Mark a live order deleted (its transfers keep naming it); None if there is no such live order."""
    return _order(await conn.fetchrow(
        f"UPDATE orders SET deleted_at = now() WHERE order_id = $1 AND deleted_at IS NULL RETURNING {ORDER_COLUMNS}",
        order_id))


async def want_transfer(conn: Db, file_name: str, destination: str, *, order_id: str | None = None,
                        requested_by: str | None = None, priority: int = 0) -> None:
    """Record that `order_id` (or the peer `requested_by`) wants `file_name` at `destination`: a new transfer, or
    the order (and a higher priority) added to the one there is."""
    await conn.execute(
        "INSERT INTO transfers AS t (file_name, destination, order_ids, requested_by, priority)"
        " VALUES ($1, $2, CASE WHEN $3::text IS NULL THEN '{}'::text[] ELSE ARRAY[$3::text] END, $4, $5)"
        " ON CONFLICT (file_name, destination) DO UPDATE SET"
        " order_ids = CASE WHEN $3::text IS NULL OR $3::text = ANY (t.order_ids) THEN t.order_ids"
        " ELSE t.order_ids || $3::text END,"
        " requested_by = COALESCE(t.requested_by, EXCLUDED.requested_by),"
        " priority = GREATEST(t.priority, EXCLUDED.priority)",
        file_name, destination, order_id, requested_by, priority,
    )


async def record_instance(conn: Db, file_name: str, site: str, store: str, path: str, checksum: str,
                          verified_at: datetime) -> None:
    """Remember a verified instance (instance.created of any site)."""
    await conn.execute(
        "INSERT INTO instances (file_name, site, store, path, checksum, verified_at) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (site, store, path) DO UPDATE SET file_name = EXCLUDED.file_name,"
        " checksum = EXCLUDED.checksum, verified_at = EXCLUDED.verified_at",
        file_name, site, store, path, checksum, verified_at,
    )


async def open_batch(conn: asyncpg.Connection, batch_id: str, peer: str, manager: str,
                     transfers: Sequence[tuple[str, str]]) -> None:
    """Record a batch to `peer` and an attempt (no outcome yet) for each (file_name, destination) in it."""
    async with conn.transaction():
        await conn.execute("INSERT INTO batches (batch_id, peer, manager) VALUES ($1, $2, $3)", batch_id, peer,
                           manager)
        await conn.executemany("INSERT INTO attempts (batch_id, file_name, destination) VALUES ($1, $2, $3)",
                               [(batch_id, name, destination) for name, destination in transfers])


async def end_attempt(conn: asyncpg.Connection, batch_id: str, file_name: str, destination: str, *, outcome: str,
                      reason: str | None = None, sent_bytes: int = 0, retry_at: datetime | None = None) -> None:
    """Record how one file's attempt of a batch ended, and what it means for its transfer: delivered (or held
    already) sets delivered_at; failed records the error and when to try again (`retry_at`)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"an attempt ends {', '.join(OUTCOMES)}; got {outcome!r}")
    async with conn.transaction():
        await conn.execute(
            "UPDATE attempts SET outcome = $4, reason = $5, bytes = $6, ended_at = now()"
            " WHERE batch_id = $1 AND file_name = $2 AND destination = $3",
            batch_id, file_name, destination, outcome, reason, sent_bytes,
        )
        await conn.execute(
            "UPDATE transfers SET attempts = attempts + 1, last_attempt_at = now(),"
            " last_error = CASE WHEN $3 THEN last_error ELSE $4 END,"
            " delivered_at = CASE WHEN $3 THEN COALESCE(delivered_at, now()) ELSE delivered_at END,"
            " next_attempt_at = COALESCE($5, next_attempt_at)"
            " WHERE file_name = $1 AND destination = $2",
            file_name, destination, outcome in DELIVERED, reason, retry_at,
        )


async def close_batch(conn: Db, batch_id: str) -> None:
    """Mark a batch ended."""
    await conn.execute("UPDATE batches SET ended_at = now() WHERE batch_id = $1 AND ended_at IS NULL", batch_id)


async def list_transfers(conn: Db, max_attempts: int, page: Page, *, stuck: bool = False) -> list[dict[str, Any]]:
    """Transfers with their derived `state`, by (file_name, destination), as `page` says; `stuck`: only those
    tried at least once that are not done."""
    rows = await conn.fetch(
        f"SELECT * FROM (SELECT {TRANSFER_COLUMNS}, {TRANSFER_STATE} AS state FROM transfers t"
        " WHERE ($2::text IS NULL OR t.destination = $2)"
        " AND ($3::text IS NULL OR (t.file_name, t.destination) > ($3::text, $4::text))"
        " AND (NOT $6 OR t.attempts > 0)) AS v"
        " WHERE ($5::text IS NULL OR v.state = $5) AND (NOT $6 OR v.state <> 'done')"
        " ORDER BY file_name, destination LIMIT $7",
        max_attempts, page.destination, *(page.after or (None, None)), page.state, stuck, page.limit,
    )
    return [dict(r) for r in rows]
