"""Session grouping with plain values: a small in-memory projection applies each decision as the catalog does."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from services.catalog.sessions import (
    KnownObservation,
    SessionAction,
    SessionClosure,
    SessionPolicy,
    SessionPolicyError,
    assign_session,
    gap_threshold,
    session_id_for,
    sessions_to_close,
)

CADENCE_DAYS = 10.737 / 86400  # HERA: one correlator file every ~10.7 s
T0 = datetime(2020, 9, 30, 12, 0, tzinfo=UTC)


@dataclass
class Session:
    session_id: str
    last_seen_at: datetime
    closed_at: datetime | None = None


@dataclass
class Ledger:
    """The projection in miniature: observations by start, sessions, and the decisions applied to them."""

    policy: SessionPolicy
    times: list[float] = field(default_factory=list)
    session_of: dict[float, str] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)

    def neighbours(self, jd: float) -> list[KnownObservation]:
        k = self.policy.neighbour_count
        i = bisect.bisect_left(self.times, jd)
        around = set(self.times[max(0, i - k): i] + self.times[i: i + k])
        # As NEIGHBOURS_SQL: also the nearest observation of an open session on each side, within gap_days.
        open_times = [t for t in self.times if not self.closed(self.session_of[t])]
        j = bisect.bisect_left(open_times, jd)
        for t in open_times[max(0, j - 1): j + 1]:
            if abs(t - jd) <= self.policy.gap_days:
                around.add(t)
        return [KnownObservation(t, self.session_of[t], self.closed(self.session_of[t])) for t in sorted(around)]

    def closed(self, session_id: str) -> bool:
        return self.sessions[session_id].closed_at is not None

    def add(self, jd: float, arrived: datetime = T0) -> SessionAction:
        decision = assign_session(self.policy, jd, self.neighbours(jd))
        if decision.action is SessionAction.KNOWN:
            return decision.action
        for absorbed in decision.absorbed:
            assert not self.closed(absorbed), "a closed session must never be merged"
            for t, sid in list(self.session_of.items()):
                if sid == absorbed:
                    self.session_of[t] = decision.session_id
            last = self.sessions.pop(absorbed).last_seen_at
            arrived = max(arrived, last)
        if decision.action is SessionAction.JOIN:
            assert not self.closed(decision.session_id), "a closed session must never grow"
            session = self.sessions[decision.session_id]
            session.last_seen_at = max(session.last_seen_at, arrived)
        else:
            previous = self.sessions.get(decision.session_id)
            self.sessions[decision.session_id] = Session(
                decision.session_id, max(arrived, previous.last_seen_at) if previous else arrived
            )
        bisect.insort(self.times, jd)
        self.session_of[jd] = decision.session_id
        return decision.action

    def close_quiet(self, now: datetime) -> list[SessionClosure]:
        closures = sessions_to_close(self.sessions.values(), now, self.policy)
        for closure in closures:
            self.sessions[closure.session_id].closed_at = closure.closed_at
        return closures

    def ranges(self) -> dict[str, tuple[float, float, int]]:
        members: dict[str, list[float]] = {}
        for t, sid in self.session_of.items():
            members.setdefault(sid, []).append(t)
        return {sid: (min(ts), max(ts), len(ts)) for sid, ts in members.items()}


def night(start_jd: float, n: int, cadence: float = CADENCE_DAYS) -> list[float]:
    return [round(start_jd + i * cadence, 9) for i in range(n)]


NIGHTS = [night(2459122.25, 200), night(2459123.25, 200), night(2459124.26, 200)]


def expected_ranges(nights: list[list[float]]) -> dict[str, tuple[float, float, int]]:
    return {session_id_for(n[0]): (n[0], n[-1], len(n)) for n in nights}


@pytest.mark.parametrize("seed", range(5))
def test_three_shuffled_nights_make_exactly_three_sessions(seed: int) -> None:
    arrivals = [t for n in NIGHTS for t in n]
    random.Random(seed).shuffle(arrivals)
    ledger = Ledger(SessionPolicy())
    for jd in arrivals:
        ledger.add(jd)
    assert ledger.ranges() == expected_ranges(NIGHTS)
    assert set(ledger.sessions) == set(expected_ranges(NIGHTS))


def test_in_order_and_reverse_order_give_the_same_sessions() -> None:
    for arrivals in ([t for n in NIGHTS for t in n], [t for n in reversed(NIGHTS) for t in reversed(n)]):
        ledger = Ledger(SessionPolicy())
        for jd in arrivals:
            ledger.add(jd)
        assert ledger.ranges() == expected_ranges(NIGHTS)


def test_duplicates_change_nothing() -> None:
    arrivals = [t for n in NIGHTS for t in n]
    random.Random(7).shuffle(arrivals)
    ledger = Ledger(SessionPolicy())
    for jd in arrivals:
        ledger.add(jd)
    before = ledger.ranges()
    replay = arrivals[:]
    random.Random(8).shuffle(replay)
    assert {ledger.add(jd) for jd in replay} == {SessionAction.KNOWN}
    assert ledger.ranges() == before


def test_a_break_much_longer_than_the_cadence_splits_a_night() -> None:
    first, second = night(2459122.25, 100), night(2459122.25 + 99 * CADENCE_DAYS + 600 / 86400, 100)
    ledger = Ledger(SessionPolicy())
    for jd in first + second:
        ledger.add(jd)
    assert ledger.ranges() == expected_ranges([first, second])


def test_the_same_break_at_a_slow_cadence_is_not_a_break() -> None:
    slow = 60 / 86400
    first = night(2459122.25, 100, slow)
    second = night(first[-1] + 600 / 86400, 100, slow)
    ledger = Ledger(SessionPolicy())
    for jd in first + second:
        ledger.add(jd)
    assert ledger.ranges() == expected_ranges([first + second])


def test_a_cadence_change_within_a_night_keeps_one_session() -> None:
    fast = night(2459122.25, 100)
    slow = night(fast[-1] + 60 / 86400, 100, 60 / 86400)
    for order in (fast + slow, list(reversed(fast + slow))):
        ledger = Ledger(SessionPolicy())
        for jd in order:
            ledger.add(jd)
        assert ledger.ranges() == expected_ranges([fast + slow])


def test_gap_threshold_follows_the_recent_cadence_and_falls_back_to_gap_days() -> None:
    policy = SessionPolicy(gap_days=0.05, cadence_factor=10)
    assert gap_threshold(policy, 10.0, []) == 0.05
    around = [KnownObservation(10.0 + i * 0.001, "s") for i in range(1, 5)]
    assert gap_threshold(policy, 10.0, around) == pytest.approx(0.01)


def test_filling_the_gap_between_two_open_sessions_merges_them_under_the_earliest_id() -> None:
    policy = SessionPolicy(gap_days=0.01)
    neighbours = [KnownObservation(1.000, "a"), KnownObservation(1.008, "b")]
    decision = assign_session(policy, 1.004, neighbours)
    assert (decision.action, decision.session_id, decision.absorbed) == (SessionAction.MERGE, "a", ("b",))


def test_an_earlier_observation_renames_the_session_after_itself() -> None:
    decision = assign_session(SessionPolicy(gap_days=0.01), 1.0, [KnownObservation(1.005, "1.00500")])
    assert decision == assign_session(SessionPolicy(gap_days=0.01), 1.0, [KnownObservation(1.005, "1.00500")])
    assert (decision.action, decision.session_id, decision.absorbed) == (
        SessionAction.MERGE, "1.00000", ("1.00500",)
    )


def test_a_closed_session_never_changes_and_stragglers_form_a_late_session() -> None:
    ledger = Ledger(SessionPolicy(quiet_period_s=3600))
    for jd in NIGHTS[0][::2]:
        ledger.add(jd, arrived=T0)
    closed_id = session_id_for(NIGHTS[0][0])
    assert ledger.close_quiet(T0 + timedelta(hours=1)) == [
        SessionClosure(closed_id, T0 + timedelta(hours=1))
    ]
    frozen = ledger.ranges()[closed_id]
    stragglers = NIGHTS[0][1::2][:10]
    for jd in reversed(stragglers):
        ledger.add(jd, arrived=T0 + timedelta(hours=2))
    ranges = ledger.ranges()
    assert ranges[closed_id] == frozen
    late_id = session_id_for(stragglers[0])
    assert ranges == {closed_id: frozen, late_id: (stragglers[0], stragglers[-1], len(stragglers))}
    assert ledger.sessions[late_id].closed_at is None
    assert ledger.close_quiet(T0 + timedelta(hours=3)) == [SessionClosure(late_id, T0 + timedelta(hours=3))]


def test_sessions_to_close_uses_the_quiet_period_and_a_replayable_closed_at() -> None:
    policy = SessionPolicy(quiet_period_s=600)
    sessions = [
        Session("b", T0), Session("a", T0 - timedelta(hours=1)),
        Session("c", T0 + timedelta(minutes=5)), Session("d", T0 - timedelta(days=1), closed_at=T0),
    ]
    closures = sessions_to_close(sessions, T0 + timedelta(minutes=10), policy)
    assert closures == [
        SessionClosure("a", T0 - timedelta(minutes=50)), SessionClosure("b", T0 + timedelta(minutes=10))
    ]
    with pytest.raises(SessionPolicyError, match="timezone-aware"):
        sessions_to_close(sessions, datetime(2020, 1, 1), policy)


def test_bad_policies_and_inputs_are_refused_with_the_setting_named() -> None:
    with pytest.raises(SessionPolicyError, match="gap_days"):
        SessionPolicy(gap_days=0)
    with pytest.raises(SessionPolicyError, match="cadence_factor"):
        SessionPolicy(cadence_factor=0.5)
    with pytest.raises(SessionPolicyError, match="finite"):
        assign_session(SessionPolicy(), float("nan"), [])
