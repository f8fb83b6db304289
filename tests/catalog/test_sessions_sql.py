"""The neighbour query of the session grouping, run against the real PostgreSQL schema."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from services.catalog.sessions import (
    NEIGHBOURS_SQL,
    KnownObservation,
    SessionAction,
    SessionPolicy,
    assign_session,
)
from shared.db import apply_migrations, create_pool

DSN = "postgresql://postgres@127.0.0.1:5432/test"
CADENCE = 10.737 / 86400
SEEN = datetime(2020, 9, 30, 12, tzinfo=UTC)


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    schema = f"catalog_sessions_{uuid.uuid4().hex[:12]}"
    pool = await create_pool(DSN, schema, max_size=1)
    try:
        await apply_migrations(pool, schema, ["services.catalog.migrations"])
        yield pool
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


async def neighbours(pool: asyncpg.Pool, jd: float, policy: SessionPolicy) -> list[KnownObservation]:
    rows = await pool.fetch(NEIGHBOURS_SQL, jd, policy.neighbour_count, policy.gap_days)
    return [KnownObservation(r["start_jd"], r["session_id"], r["session_closed"]) for r in rows]


async def test_a_straggler_sees_its_late_session_past_a_closed_night(pool: asyncpg.Pool) -> None:
    policy = SessionPolicy(neighbour_count=4)
    night = [2459122.25 + i * CADENCE for i in range(40)]
    await pool.executemany(
        "INSERT INTO observations (observation_id, start_jd, session_id) VALUES ($1, $2, $3)",
        [(f"zen.{jd:.5f}", jd, "closed-night") for jd in night[::2]]
        + [(f"zen.{night[1]:.5f}", night[1], "late")],
    )
    await pool.executemany(
        "INSERT INTO sessions (session_id, start_jd, end_jd, n_observations, last_seen_at, closed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        [("closed-night", night[0], night[-2], 20, SEEN, SEEN), ("late", night[1], night[1], 1, SEEN, None)],
    )
    straggler = night[15]
    known = await neighbours(pool, straggler, policy)
    assert sum(1 for k in known if k.session_id == "late") == 1
    assert len(known) == 2 * policy.neighbour_count + 1
    decision = assign_session(policy, straggler, known)
    assert (decision.action, decision.session_id) == (SessionAction.JOIN, "late")
    far_straggler = night[1] + 2 * policy.gap_days
    decision = assign_session(policy, far_straggler, await neighbours(pool, far_straggler, policy))
    assert decision.action is SessionAction.START
