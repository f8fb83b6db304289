"""Grouping observations into observing sessions: pure decisions on plain values, no database.

Rules (docs/catalog-search.md has the user's view):
- A session is a run of observations whose successive start times are no further apart than the gap
  threshold: ``min(gap_days, cadence_factor * recent cadence)``, where the recent cadence is the median
  gap between the known observations around the new one (``gap_days`` alone while too few are known).
  A gap longer than ``gap_days`` always separates two sessions, whatever the arrival order.
- Observations arrive in any order and possibly twice. An observation that fills the gap between two
  open sessions merges them; one that arrives before an open session's first observation extends it
  backwards. A session's id is always made from its earliest observation's start (``2459122.30000``), so
  the final ids do not depend on the arrival order, and a replay of the same events gives the same ids.
- A closed session never changes (its nightly pipeline has already run on it). An observation that
  would have joined or merged a closed session starts a new open session instead (a "late" session,
  reason ``beside-closed-session``). Closed sessions' observations are invisible when linking, so later
  stragglers of that night within the gap threshold of each other join that late session, which closes
  in its turn after the quiet period and so gets its own pipeline run.
- Closing: a session is closed once no observation has arrived for ``quiet_period_s``. Its ``closed_at``
  is ``last_seen_at + quiet_period_s`` (not the wall clock of the sweep), so a replay that sweeps with
  each event's time as ``now`` closes the same sessions at the same instants.

Applying a decision (the projection, in the transaction that records the observation):
- KNOWN: change nothing (a duplicate, or another observation at the very same start time).
- JOIN: set the observation's session; widen the session's start/end, n_observations + 1,
  last_seen_at = greatest(last_seen_at, arrival time).
- START: insert the session (start_jd = end_jd = obs_jd, n_observations = 1, last_seen_at = arrival).
- MERGE: move the observations of ``absorbed`` (and this one) to ``session_id``, delete the absorbed
  session rows, and upsert ``session_id`` from the aggregate of its observations (min, max, count) with
  last_seen_at = greatest of the absorbed sessions' and the arrival time.
``NEIGHBOURS_SQL`` fetches the neighbours ``assign_session`` needs ($1 = obs_jd, $2 = neighbour_count,
$3 = gap_days): the nearest observations on each side, and the nearest one in an open session on each
side (a closed night's observations may stand between a straggler and its late session).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from statistics import median
from typing import Protocol

# Two start times closer than this (about 86 µs) are the same instant: the second is a duplicate.
SAME_TIME_DAYS = 1e-9

NEIGHBOURS_SQL = """
(SELECT o.start_jd, o.session_id, s.closed_at IS NOT NULL AS session_closed
   FROM observations o JOIN sessions s USING (session_id)
  WHERE o.start_jd < $1 ORDER BY o.start_jd DESC LIMIT $2)
UNION
(SELECT o.start_jd, o.session_id, s.closed_at IS NOT NULL AS session_closed
   FROM observations o JOIN sessions s USING (session_id)
  WHERE o.start_jd >= $1 ORDER BY o.start_jd LIMIT $2)
UNION
(SELECT o.start_jd, o.session_id, false AS session_closed
   FROM observations o JOIN sessions s USING (session_id)
  WHERE o.start_jd < $1 AND o.start_jd >= $1 - $3 AND s.closed_at IS NULL ORDER BY o.start_jd DESC LIMIT 1)
UNION
(SELECT o.start_jd, o.session_id, false AS session_closed
   FROM observations o JOIN sessions s USING (session_id)
  WHERE o.start_jd >= $1 AND o.start_jd <= $1 + $3 AND s.closed_at IS NULL ORDER BY o.start_jd LIMIT 1)
"""

class SessionPolicyError(ValueError):
    """A session policy or an input to the grouping that cannot work; the message says which and why."""


@dataclass(frozen=True)
class SessionPolicy:
    """How observations are grouped into sessions and when an idle session is closed."""

    gap_days: float = 1 / 24
    cadence_factor: float = 30.0
    quiet_period_s: float = 7200.0
    neighbour_count: int = 8
    min_cadence_gaps: int = 2

    def __post_init__(self) -> None:
        for name in ("gap_days", "cadence_factor", "quiet_period_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SessionPolicyError(f"SessionPolicy.{name} must be a positive number, got {value!r}")
        if self.cadence_factor < 1:
            raise SessionPolicyError("SessionPolicy.cadence_factor must be at least 1 (a gap of one cadence "
                                     f"is never a break), got {self.cadence_factor!r}")
        if self.neighbour_count < 1 or self.min_cadence_gaps < 1:
            raise SessionPolicyError("SessionPolicy.neighbour_count and min_cadence_gaps must be at least 1")


class SessionAction(StrEnum):
    """What the projection does with a new observation."""

    KNOWN = "known"
    JOIN = "join"
    START = "start"
    MERGE = "merge"


@dataclass(frozen=True)
class KnownObservation:
    """An observation already grouped: its start, its session and whether that session is closed."""

    start_jd: float
    session_id: str
    session_closed: bool = False


@dataclass(frozen=True)
class SessionDecision:
    """The session a new observation belongs to; for MERGE, the sessions folded into it."""

    action: SessionAction
    session_id: str
    absorbed: tuple[str, ...] = ()
    reason: str = ""


def session_id_for(start_jd: float) -> str:
    """The id of a session whose earliest observation starts at start_jd, e.g. '2459122.30000'."""
    return f"{start_jd:.5f}"


def gap_threshold(policy: SessionPolicy, obs_jd: float, neighbours: Sequence[KnownObservation]) -> float:
    """The longest gap (days) that still continues a session around obs_jd, from the recent cadence."""
    times = sorted({n.start_jd for n in neighbours} | {obs_jd})
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    in_session_gaps = [gap for gap in gaps if SAME_TIME_DAYS < gap <= policy.gap_days]
    if len(in_session_gaps) < policy.min_cadence_gaps:
        return policy.gap_days
    return min(policy.gap_days, policy.cadence_factor * median(in_session_gaps))


def assign_session(
    policy: SessionPolicy, obs_jd: float, neighbours: Iterable[KnownObservation]
) -> SessionDecision:
    """Decide the session of an observation starting at obs_jd, given the known observations around it."""
    if not math.isfinite(obs_jd):
        raise SessionPolicyError(f"an observation's start must be a finite Julian date, got {obs_jd!r}")
    known = list(neighbours)
    for neighbour in known:
        if abs(neighbour.start_jd - obs_jd) <= SAME_TIME_DAYS:
            return SessionDecision(SessionAction.KNOWN, neighbour.session_id, reason="same-time")
    open_known = [n for n in known if not n.session_closed]
    before = max((n for n in open_known if n.start_jd < obs_jd), key=lambda n: n.start_jd, default=None)
    after = min((n for n in open_known if n.start_jd > obs_jd), key=lambda n: n.start_jd, default=None)
    if before and after and before.session_id == after.session_id:
        return SessionDecision(SessionAction.JOIN, before.session_id, reason="inside-session")
    threshold = gap_threshold(policy, obs_jd, known)
    joins_before = before is not None and obs_jd - before.start_jd <= threshold
    joins_after = after is not None and after.start_jd - obs_jd <= threshold
    if joins_before and joins_after and before and after:
        return SessionDecision(SessionAction.MERGE, before.session_id, (after.session_id,), "fills-gap")
    if joins_before and before:
        return SessionDecision(SessionAction.JOIN, before.session_id, reason="continues")
    taken = {n.session_id for n in known}
    new_id = _fresh_session_id(obs_jd, taken)
    if joins_after and after:
        return SessionDecision(SessionAction.MERGE, new_id, (after.session_id,), "extends-earlier")
    beside_closed = any(n.session_closed and abs(n.start_jd - obs_jd) <= threshold for n in known)
    reason = "beside-closed-session" if beside_closed else "after-gap"
    return SessionDecision(SessionAction.START, new_id, reason=reason)


def _fresh_session_id(obs_jd: float, taken: set[str]) -> str:
    # Two sessions starting within the same 0.86 s (a late straggler beside a closed session's first
    # observation) would share the 5-decimal id; the longer form keeps them apart, deterministically.
    candidate = session_id_for(obs_jd)
    return candidate if candidate not in taken else f"{obs_jd:.9f}"


class SessionActivity(Protocol):
    """What the quiet-period sweep reads of a session."""

    @property
    def session_id(self) -> str: ...

    @property
    def last_seen_at(self) -> datetime: ...

    @property
    def closed_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class SessionClosure:
    """A session to close now, and the instant to record as its closed_at."""

    session_id: str
    closed_at: datetime


def sessions_to_close(
    sessions: Iterable[SessionActivity], now: datetime, policy: SessionPolicy
) -> list[SessionClosure]:
    """The open sessions quiet for at least the policy's quiet period at `now`, in session id order."""
    if now.tzinfo is None:
        raise SessionPolicyError("sessions_to_close needs a timezone-aware `now` (e.g. datetime.now(UTC))")
    quiet = timedelta(seconds=policy.quiet_period_s)
    closures = [
        SessionClosure(s.session_id, s.last_seen_at + quiet)
        for s in sessions
        if s.closed_at is None and now - s.last_seen_at >= quiet
    ]
    return sorted(closures, key=lambda c: c.session_id)
