"""Applies the session grouping's decisions (sessions.py) to the observations and sessions tables.

Closing is not done here: a session is closed only by the live sweep or an explicit close (session_closing.py),
which append `session.closed`; this projection applies that event when it reads it back from the log, so a
replay reproduces `closed_at` from the log and never decides (or emits) a closure itself.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import structlog

from services.catalog.sessions import (
    NEIGHBOURS_SQL,
    KnownObservation,
    SessionAction,
    SessionDecision,
    SessionPolicy,
    assign_session,
)

log = structlog.get_logger()

# Grouping and closing take this transaction lock, so an observation is never added to a session being closed.
SESSIONS_LOCK = 0x0B5F_C47A_5E55_1045


async def record_observation(
    conn: asyncpg.Connection,
    policy: SessionPolicy,
    observation_id: str,
    start_jd: float,
    duration_s: float | None,
    arrived_at: datetime,
) -> SessionDecision | None:
    """Insert the observation (once) into its session; None if it was already known."""
    # Few round trips per observation: the projection applies thousands a second.
    known = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM observations WHERE observation_id = $1) FROM pg_advisory_xact_lock($2)",
        observation_id, SESSIONS_LOCK,
    )
    if known:
        return None
    rows = await conn.fetch(NEIGHBOURS_SQL, start_jd, policy.neighbour_count, policy.gap_days)
    neighbours = [KnownObservation(r["start_jd"], r["session_id"], r["session_closed"]) for r in rows]
    decision = assign_session(policy, start_jd, neighbours)
    new = (observation_id, start_jd, duration_s)
    if decision.action is SessionAction.KNOWN:
        # Another observation at the very same instant: it shares that session unless the session is closed.
        if any(n.session_closed for n in neighbours if n.session_id == decision.session_id):
            await conn.execute(f"{_INSERT_OBSERVATION} VALUES ($1, $2, $3, NULL)", *new)
        else:
            await conn.execute(_JOIN_SQL, *new, decision.session_id, arrived_at)
    elif decision.action is SessionAction.JOIN:
        await conn.execute(_JOIN_SQL, *new, decision.session_id, arrived_at)
    elif decision.action is SessionAction.START:
        await conn.execute(_START_SQL, *new, decision.session_id, arrived_at)
    else:
        await conn.execute(f"{_INSERT_OBSERVATION} VALUES ($1, $2, $3, $4)", *new, decision.session_id)
        await _merge(conn, decision, arrived_at)
    return decision


_INSERT_OBSERVATION = "INSERT INTO observations (observation_id, start_jd, duration_s, session_id)"
_JOIN_SQL = (
    f"WITH new AS ({_INSERT_OBSERVATION} VALUES ($1, $2, $3, $4))"
    " UPDATE sessions SET start_jd = LEAST(start_jd, $2), end_jd = GREATEST(end_jd, $2),"
    " n_observations = n_observations + 1, last_seen_at = GREATEST(last_seen_at, $5) WHERE session_id = $4"
)
_START_SQL = (
    "WITH new AS (INSERT INTO sessions (session_id, start_jd, end_jd, n_observations, last_seen_at)"
    f" VALUES ($4, $2, $2, 1, $5)) {_INSERT_OBSERVATION} VALUES ($1, $2, $3, $4)"
)


async def _merge(conn: asyncpg.Connection, decision: SessionDecision, arrived_at: datetime) -> None:
    target, absorbed = decision.session_id, [s for s in decision.absorbed if s != decision.session_id]
    await conn.execute(
        "UPDATE observations SET session_id = $1 WHERE session_id = ANY($2::text[])", target, absorbed
    )
    seen = await conn.fetchval(
        "WITH gone AS (DELETE FROM sessions WHERE session_id = ANY($1::text[]) RETURNING last_seen_at)"
        " SELECT max(last_seen_at) FROM gone",
        absorbed,
    )
    await conn.execute(
        "INSERT INTO sessions (session_id, start_jd, end_jd, n_observations, last_seen_at)"
        " SELECT $1, min(start_jd), max(start_jd), count(*), GREATEST($2::timestamptz, $3::timestamptz)"
        " FROM observations WHERE session_id = $1"
        " ON CONFLICT (session_id) DO UPDATE SET start_jd = EXCLUDED.start_jd, end_jd = EXCLUDED.end_jd,"
        " n_observations = EXCLUDED.n_observations,"
        " last_seen_at = GREATEST(sessions.last_seen_at, EXCLUDED.last_seen_at)",
        target, arrived_at, seen,
    )


async def apply_session_closed(
    conn: asyncpg.Connection, session_id: str, closed_at: datetime, file_names: list[str]
) -> None:
    """Mark a session closed as the log says (a no-op when the live close already did)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", SESSIONS_LOCK)
    status = await conn.execute(
        "UPDATE sessions SET closed_at = $2 WHERE session_id = $1 AND closed_at IS NULL", session_id, closed_at
    )
    if status == "UPDATE 1":
        count = await conn.fetchval(
            "SELECT count(*) FROM files f JOIN observations o USING (observation_id) WHERE o.session_id = $1",
            session_id,
        )
        if count != len(file_names):
            # Only if an observation reached the log between the live close and its session.closed event.
            log.warning("session_replayed_with_other_files", session_id=session_id, files_now=count,
                        files_at_close=len(file_names))
    elif not await conn.fetchval("SELECT true FROM sessions WHERE session_id = $1", session_id):
        log.warning("session_closed_for_unknown_session", session_id=session_id)
