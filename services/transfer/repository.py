"""The transfer service's SQL: standing orders, the transfers they want, batches and their attempts.

A transfer's state is derived in SQL from facts (TRANSFER_STATE), never kept in a column: done iff the destination
said it holds the file (delivered_at) or an instance at the destination is known; in_flight iff one of its attempts
has no outcome yet; failed iff neither and its attempts reached max_attempts (or the destination refused it for
good); queued otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from services.transfer.orders import OrderRequest

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool

ORDER_COLUMNS = ("order_id, label, search, destination, store, manager, priority, created_by, created_at, paused_at,"
                 " deleted_at")

# $1 is max_attempts in every query that uses it.
# A copy at the destination counts only if another site holds the same content: a file of that name the destination
# minted itself with other content (a conflict) does not make the transfer done.
ARRIVED = """EXISTS (SELECT 1 FROM instances d WHERE d.file_name = t.file_name AND d.site = t.destination
    AND EXISTS (SELECT 1 FROM instances s WHERE s.file_name = d.file_name AND s.site <> d.site
                AND s.checksum = d.checksum))"""
TRANSFER_STATE = f"""CASE
    WHEN t.delivered_at IS NOT NULL OR {ARRIVED} THEN 'done'
    WHEN EXISTS (
        SELECT 1 FROM attempts a WHERE a.file_name = t.file_name AND a.destination = t.destination
        AND a.outcome IS NULL) THEN 'in_flight'
    WHEN t.attempts >= $1 OR t.next_attempt_at = 'infinity' THEN 'failed'
    ELSE 'queued' END"""
# A transfer refused for good waits until 'infinity' in the table; its answer says never (null).
TRANSFER_COLUMNS = ("file_name, destination, order_ids, requested_by, priority, created_at, attempts,"
                    " CASE WHEN next_attempt_at = 'infinity' THEN NULL ELSE next_attempt_at END AS next_attempt_at,"
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


async def list_transfers(conn: Db, max_attempts: int, page: Page, *, stuck: bool = False) -> list[dict[str, Any]]:
    """Transfers with their derived `state`, by (file_name, destination), as `page` says; `stuck`: only those
    failed at least once that are not done."""
    rows = await conn.fetch(
        f"SELECT * FROM (SELECT {TRANSFER_COLUMNS}, {TRANSFER_STATE} AS state FROM transfers t"
        " WHERE ($2::text IS NULL OR t.destination = $2)"
        " AND ($3::text IS NULL OR (t.file_name, t.destination) > ($3::text, $4::text))"
        " AND (NOT $6 OR t.last_error IS NOT NULL)) AS v"
        " WHERE ($5::text IS NULL OR v.state = $5) AND (NOT $6 OR v.state <> 'done')"
        " ORDER BY file_name, destination LIMIT $7",
        max_attempts, page.destination, *(page.after or (None, None)), page.state, stuck, page.limit,
    )
    return [dict(r) for r in rows]


@dataclass(frozen=True)
class LiveOrder:
    """An order that is neither paused nor deleted."""

    order_id: str
    search: dict[str, Any]
    destination: str
    priority: int
    manager: str | None
    caught_up_at: Any


@dataclass(frozen=True)
class DueTransfer:
    """A transfer to try now: not done, not in flight, its retry time come, attempts left."""

    file_name: str
    destination: str
    attempts: int
    manager: str | None  # an order's choice, if any of its orders made one
    holders: tuple[str, ...]  # sites known to hold a verified copy (instances, or a delivery a peer confirmed)


@dataclass(frozen=True)
class Source:
    """What a replica claim carries and where this site's verified copy lies."""

    minted: dict[str, Any]
    store: str
    path: str


@dataclass(frozen=True)
class Result:
    """How one file of a batch ended."""

    file_name: str
    destination: str
    outcome: str  # delivered | already | failed
    reason: str | None = None
    bytes: int = 0
    permanent: bool = False
    reached_destination: bool = False  # the batch's peer is the transfer's destination
    unreachable: bool = False  # the peer could not be reached: the attempt is not counted against the file


async def live_orders(conn: asyncpg.Connection) -> list[LiveOrder]:
    """Every order in force, oldest first."""
    rows = await conn.fetch(
        "SELECT order_id, search, destination, priority, manager, caught_up_at FROM orders"
        " WHERE deleted_at IS NULL AND paused_at IS NULL ORDER BY created_at, order_id"
    )
    return [LiveOrder(r["order_id"], json.loads(r["search"]), r["destination"], r["priority"], r["manager"],
                      r["caught_up_at"]) for r in rows]


async def pending_names(conn: asyncpg.Connection, limit: int) -> list[str]:
    """Names waiting for evaluation whose time has come, oldest first."""
    rows = await conn.fetch(
        "SELECT file_name FROM pending_evaluations WHERE not_before <= now() ORDER BY since, file_name LIMIT $1", limit,
    )
    return [r["file_name"] for r in rows]


async def forget_pending(conn: asyncpg.Connection, names: Sequence[str]) -> None:
    """These names have been evaluated against every live order."""
    await conn.execute("DELETE FROM pending_evaluations WHERE file_name = ANY($1::text[])", list(names))


async def postpone_pending(conn: asyncpg.Connection, names: Sequence[str], *, give_up_after: int) -> int:
    """The catalog does not know these names yet: ask again later (capped backoff); after `give_up_after` tries
    leave them to the catch-up pass. Returns how many were given up."""
    await conn.execute(
        "UPDATE pending_evaluations SET tries = tries + 1,"
        " not_before = now() + least(30.0, 0.2 * 2 ^ tries) * interval '1 second'"
        " WHERE file_name = ANY($1::text[])", list(names),
    )
    given_up = await conn.fetch(
        "DELETE FROM pending_evaluations WHERE file_name = ANY($1::text[]) AND tries >= $2 RETURNING file_name",
        list(names), give_up_after,
    )
    return len(given_up)


async def want_transfers(conn: asyncpg.Connection, wanted: Sequence[tuple[str, str, str, int]]) -> int:
    """(file, destination, order id, priority) must happen: new transfers, or more orders on existing ones.
    Returns how many transfers are new."""
    if not wanted:
        return 0
    files, destinations, orders, priorities = (list(c) for c in zip(*wanted, strict=True))
    rows = await conn.fetch(
        "INSERT INTO transfers (file_name, destination, order_ids, priority)"
        " SELECT f, d, ARRAY[o], p FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS w(f, d, o, p)"
        " ORDER BY f, d"
        " ON CONFLICT (file_name, destination) DO UPDATE SET"
        "  order_ids = CASE WHEN EXCLUDED.order_ids[1] = ANY(transfers.order_ids) THEN transfers.order_ids"
        "   ELSE transfers.order_ids || EXCLUDED.order_ids END,"
        "  priority = GREATEST(transfers.priority, EXCLUDED.priority)"
        " RETURNING (xmax = 0) AS inserted",
        files, destinations, orders, priorities,
    )
    return sum(1 for r in rows if r["inserted"])


async def request_forward(conn: asyncpg.Connection, file_name: str, destination: str, requested_by: str) -> bool:
    """A peer asks this site to send a file it holds on to `destination`; True if this is new."""
    inserted = await conn.fetchval(
        "INSERT INTO transfers (file_name, destination, requested_by) VALUES ($1, $2, $3)"
        " ON CONFLICT (file_name, destination) DO UPDATE SET"
        "  requested_by = COALESCE(transfers.requested_by, EXCLUDED.requested_by)"
        " RETURNING (xmax = 0)", file_name, destination, requested_by,
    )
    return bool(inserted)


async def mark_caught_up(conn: asyncpg.Connection, order_id: str) -> None:
    """The order's catch-up pass went through every matching file."""
    await conn.execute("UPDATE orders SET caught_up_at = now() WHERE order_id = $1", order_id)


async def due_transfers(conn: asyncpg.Connection, site: str, *, max_attempts: int, limit: int) -> list[DueTransfer]:
    """Transfers to try now, by priority then age: never a file already at its destination, nor one this site holds
    no verified copy of yet (a via peer's request may come before the copy's instance.created: it waits, uncounted)."""
    rows = await conn.fetch(
        "SELECT t.file_name, t.destination, t.attempts,"
        "  (SELECT o.manager FROM orders o WHERE o.order_id = ANY(t.order_ids) AND o.manager IS NOT NULL"
        "   ORDER BY o.created_at LIMIT 1) AS manager,"
        "  ARRAY(SELECT i.site FROM instances i JOIN instances mine ON mine.file_name = i.file_name"
        "   AND mine.site = $3 AND mine.checksum = i.checksum WHERE i.file_name = t.file_name"
        "   UNION SELECT b.peer FROM attempts a JOIN batches b USING (batch_id)"
        "   WHERE a.file_name = t.file_name AND a.outcome IN ('delivered', 'already')) AS holders"
        " FROM transfers t"
        " WHERE t.delivered_at IS NULL AND t.forwarded_at IS NULL AND t.next_attempt_at <= now()"
        "  AND t.attempts < $1"
        "  AND EXISTS (SELECT 1 FROM files f JOIN instances i ON i.file_name = f.name AND i.checksum = f.checksum"
        "   WHERE f.name = t.file_name AND i.site = $3)"
        f"  AND NOT {ARRIVED}"
        "  AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.file_name = t.file_name"
        "   AND a.destination = t.destination AND a.outcome IS NULL)"
        " ORDER BY t.priority DESC, t.next_attempt_at, t.file_name LIMIT $2",
        max_attempts, limit, site,
    )
    return [DueTransfer(r["file_name"], r["destination"], r["attempts"], r["manager"], tuple(r["holders"]))
            for r in rows]


async def sources(conn: asyncpg.Connection, names: Sequence[str], site: str) -> dict[str, Source]:
    """For each name this site holds and knows the minting of: its minted metadata and one verified copy here."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (f.name) f.name, f.minted, i.store, i.path FROM files f"
        " JOIN instances i ON i.file_name = f.name AND i.site = $2 AND i.checksum = f.checksum"
        " WHERE f.name = ANY($1::text[]) ORDER BY f.name, i.verified_at DESC",
        list(names), site,
    )
    return {r["name"]: Source(json.loads(r["minted"]), r["store"], r["path"]) for r in rows}


async def start_batch(
    conn: asyncpg.Connection, batch_id: str, peer: str, manager: str, items: Sequence[tuple[str, str]]
) -> None:
    """Record a batch and its files (in flight) before anything is sent; each transfer counts an attempt."""
    await conn.execute("INSERT INTO batches (batch_id, peer, manager) VALUES ($1, $2, $3)", batch_id, peer, manager)
    files, destinations = [f for f, _ in items], [d for _, d in items]
    await conn.execute(
        "INSERT INTO attempts (batch_id, file_name, destination)"
        " SELECT $1, f, d FROM unnest($2::text[], $3::text[]) AS i(f, d)", batch_id, files, destinations,
    )
    await conn.execute(
        "UPDATE transfers t SET attempts = attempts + 1, last_attempt_at = now()"
        " FROM unnest($1::text[], $2::text[]) AS i(f, d) WHERE t.file_name = i.f AND t.destination = i.d",
        files, destinations,
    )


@dataclass(frozen=True)
class OpenBatch:
    """A batch that was in flight when the last leader stopped: sent again under the same id."""

    batch_id: str
    peer: str
    manager: str
    items: tuple[tuple[str, str], ...]


async def open_batches(conn: asyncpg.Connection) -> list[OpenBatch]:
    """Batches without an end, oldest first."""
    rows = await conn.fetch(
        "SELECT b.batch_id, b.peer, b.manager, array_agg(a.file_name ORDER BY a.file_name) AS files,"
        " array_agg(a.destination ORDER BY a.file_name) AS destinations"
        " FROM batches b JOIN attempts a USING (batch_id) WHERE b.ended_at IS NULL AND a.outcome IS NULL"
        " GROUP BY b.batch_id ORDER BY min(b.started_at)"
    )
    return [OpenBatch(r["batch_id"], r["peer"], r["manager"], tuple(zip(r["files"], r["destinations"], strict=True)))
            for r in rows]


async def attempts_of(conn: asyncpg.Connection, items: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The attempts counted so far of each (file, destination) transfer."""
    rows = await conn.fetch(
        "SELECT t.file_name, t.destination, t.attempts FROM transfers t"
        " JOIN unnest($1::text[], $2::text[]) AS i(f, d) ON t.file_name = i.f AND t.destination = i.d",
        [f for f, _ in items], [d for _, d in items],
    )
    return {(r["file_name"], r["destination"]): r["attempts"] for r in rows}


async def finish_batch(
    conn: asyncpg.Connection, batch_id: str, results: Sequence[Result], *, retry_delays_s: Sequence[float],
) -> None:
    """Record every file's outcome, move each transfer on (delivered, or its next attempt's time), end the batch.

    `retry_delays_s[i]` is when result i (a failure) may be tried again; a permanent failure is never retried.
    """
    await conn.executemany(
        "UPDATE attempts SET outcome = $3, reason = $4, bytes = $5, ended_at = now()"
        " WHERE batch_id = $1 AND file_name = $2 AND destination = $6",
        [(batch_id, r.file_name, r.outcome, r.reason, r.bytes, r.destination) for r in results],
    )
    delivered = [(r.file_name, r.destination) for r in results if r.outcome != "failed" and r.reached_destination]
    if delivered:
        await conn.executemany(
            "UPDATE transfers SET delivered_at = now(), last_error = NULL WHERE file_name = $1 AND destination = $2",
            delivered,
        )
    failed = [(r, delay) for r, delay in zip(results, retry_delays_s, strict=True) if r.outcome == "failed"]
    if failed:
        await conn.executemany(
            "UPDATE transfers SET last_error = $3, next_attempt_at = CASE WHEN $4 THEN 'infinity'::timestamptz"
            " ELSE now() + $5 * interval '1 second' END,"
            " attempts = CASE WHEN $6 THEN greatest(attempts - 1, 0) ELSE attempts END"
            " WHERE file_name = $1 AND destination = $2",
            [(r.file_name, r.destination, r.reason, r.permanent, delay, r.unreachable) for r, delay in failed],
        )
    await conn.execute("UPDATE batches SET ended_at = now() WHERE batch_id = $1", batch_id)


async def mark_forwarded(conn: asyncpg.Connection, file_name: str, destination: str) -> None:
    """The via peer accepted to send the file on: this site waits for the destination's instance."""
    await conn.execute(
        "UPDATE transfers SET forwarded_at = now(), last_error = NULL WHERE file_name = $1 AND destination = $2",
        file_name, destination,
    )


async def note_failure(conn: asyncpg.Connection, file_name: str, destination: str, reason: str, delay_s: float) -> None:
    """A step that is not a batch (asking a via peer to forward) failed: try again after `delay_s`."""
    await conn.execute(
        "UPDATE transfers SET attempts = attempts + 1, last_attempt_at = now(), last_error = $3,"
        " next_attempt_at = now() + $4 * interval '1 second' WHERE file_name = $1 AND destination = $2",
        file_name, destination, reason, delay_s,
    )


async def journal(conn: asyncpg.Connection, batch_id: str) -> dict[str, Any]:
    """The batch's notes."""
    value = await conn.fetchval("SELECT journal FROM batches WHERE batch_id = $1", batch_id)
    return dict(json.loads(value)) if value else {}


async def note_journal(conn: asyncpg.Connection, batch_id: str, values: dict[str, Any]) -> None:
    """Merge `values` into the batch's notes."""
    await conn.execute("UPDATE batches SET journal = journal || $2::jsonb WHERE batch_id = $1", batch_id,
                       json.dumps(values))

