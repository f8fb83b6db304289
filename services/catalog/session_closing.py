"""Closing observing sessions: the live sweep of idle sessions and the explicit close, each emitting once.

Why closing lives here and not in the projection: a closure starts the nightly pipeline, so it must be emitted
exactly once, and a replay of the log must emit nothing. Only the live service decides a closure (the sweep, on
the wall clock, or an operator); it sets `closed_at` and appends `session.closed` to the outbox in one
transaction. The projection reads that event back from the log and sets the same `closed_at` (the event's
time), so a rebuild reproduces every closure from the log without deciding or emitting any. Two guards keep it
exactly once: the sweep first drains the projection (it never closes a session whose observations are still
unread on the log, e.g. while catching up after a restart or a replay), and the event id is derived from the
site and the session id, so a second emission for one session is refused by the outbox's unique event id.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from services.catalog.options import CatalogOptions
from services.catalog.session_projection import SESSIONS_LOCK
from services.catalog.sessions import SessionPolicy, sessions_to_close
from shared.bus import append_events
from shared.bus.stream_consumer import StreamConsumer
from shared.errors import ObsflowError
from shared.events import Event
from shared.events.types import SessionClosed
from shared.periodic import every
from shared.service import Background, ServiceContext

log = structlog.get_logger()

_CLOSED_EVENT_NAMESPACE = uuid.UUID("3f4c2a6e-6b1d-4e0f-9a57-0c0b6d1f2e11")
FILES_OF_SESSION_SQL = (
    "SELECT f.name FROM files f JOIN observations o USING (observation_id)"
    " WHERE o.session_id = $1 ORDER BY o.start_jd, f.name"
)


class UnknownSession(ObsflowError):
    """No session has this id."""


class SessionAlreadyClosed(ObsflowError):
    """The session is closed already; a closed session never changes."""


def session_closed_event_id(site: str, session_id: str) -> uuid.UUID:
    """The one event id a session's closure can have, so a second emission is recognised as the same event."""
    return uuid.uuid5(_CLOSED_EVENT_NAMESPACE, f"{site}/session.closed/{session_id}")


async def close_session(ctx: ServiceContext, session_id: str, *, quiet_since: datetime | None = None) -> Event | None:
    """Close an open session and append its session.closed event, in one transaction; return the event.

    With `quiet_since`, close only if no observation arrived after it (None when one did).
    """
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SESSIONS_LOCK)
            row = await conn.fetchrow(
                "SELECT session_id, start_jd, end_jd, last_seen_at, closed_at FROM sessions WHERE session_id = $1"
                " FOR UPDATE",
                session_id,
            )
            if row is None:
                raise UnknownSession(f"no session {session_id!r}; list them with `obsflow sessions list`")
            if row["closed_at"] is not None:
                raise SessionAlreadyClosed(f"session {session_id} was closed at {row['closed_at'].isoformat()}")
            if quiet_since is not None and row["last_seen_at"] > quiet_since:
                return None
            names = [r["name"] for r in await conn.fetch(FILES_OF_SESSION_SQL, session_id)]
            payload = SessionClosed(
                session_id=session_id, start_jd=row["start_jd"], end_jd=row["end_jd"], file_names=names
            )
            event_id = session_closed_event_id(ctx.settings.site, session_id)
            event = ctx.event(payload).model_copy(update={"event_id": event_id, "correlation_id": event_id})
            await conn.execute("UPDATE sessions SET closed_at = $2 WHERE session_id = $1", session_id,
                               event.occurred_at)
            await append_events(conn, [event])
    except asyncpg.UniqueViolationError as e:
        raise SessionAlreadyClosed(f"session {session_id} has already been closed (its event was emitted)") from e
    log.info("session_closed", session_id=session_id, files=len(names), start_jd=row["start_jd"],
             end_jd=row["end_jd"])
    return event


@dataclass(frozen=True)
class _Activity:
    session_id: str
    last_seen_at: datetime
    closed_at: datetime | None


async def close_quiet_sessions(
    ctx: ServiceContext, policy: SessionPolicy, now: datetime | None = None
) -> list[Event]:
    """Close every open session quiet for the policy's quiet period at `now` (default: the wall clock)."""
    moment = now or datetime.now(UTC)
    rows = await ctx.pool.fetch("SELECT session_id, last_seen_at, closed_at FROM sessions WHERE closed_at IS NULL")
    closures = sessions_to_close([_Activity(**dict(r)) for r in rows], moment, policy)
    quiet_since = moment - timedelta(seconds=policy.quiet_period_s)
    events = []
    for closure in closures:
        try:
            event = await close_session(ctx, closure.session_id, quiet_since=quiet_since)
        except (UnknownSession, SessionAlreadyClosed):
            continue  # merged into another session or closed by an operator since the read: nothing to do
        if event is not None:
            events.append(event)
    return events


def session_sweeper(ctx: ServiceContext, projection: StreamConsumer, options: CatalogOptions) -> Background:
    """The background task that closes idle sessions every `sweep_interval_s`, once the projection is current."""
    interval = options.sweep_interval_s

    async def sweep() -> None:
        try:
            await projection.drain(timeout_s=max(interval, 5.0))
        except TimeoutError:
            log.info("session_sweep_skipped", reason="the projection is still reading the log")
            return
        closed = await close_quiet_sessions(ctx, options.policy)
        if closed:
            log.info("session_sweep", closed=[e.payload.session_id for e in closed])  # type: ignore[attr-defined]

    async def sweep_idle_sessions(stop: asyncio.Event) -> None:
        await every(interval, sweep, stop, name="session_sweep")

    return sweep_idle_sessions
