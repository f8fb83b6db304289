"""Fuzzing the event decoder (bounded in time): whatever arrives, MalformedEvent is the only error it raises, and
every event obsflow writes decodes back to itself."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import MalformedEvent
from shared.events import Event, decode_event, encode_event, new_event
from shared.events.types import FileMinted, InstanceCreated, JobFailed, ObservationAnnounced, SessionClosed
from tests.foundation.support import minted

BOUNDED = settings(max_examples=250, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=40,
)
A_REAL_EVENT: dict[str, Any] = json.loads(encode_event(minted(1)))


def _decodes_or_refuses(body: bytes | str | dict[str, Any]) -> None:
    try:
        event = decode_event(body)
    except MalformedEvent:
        return
    assert isinstance(event, Event)


@BOUNDED
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_decoded_or_refused(body: bytes) -> None:
    _decodes_or_refuses(body)


@BOUNDED
@given(json_values)
def test_arbitrary_json_is_decoded_or_refused(value: Any) -> None:
    _decodes_or_refuses(json.dumps(value))


@BOUNDED
@given(st.sampled_from(["type", "version", "site", "producer", "occurred_at", "event_id", "payload",
                        "correlation_id"]), json_values)
def test_a_real_event_with_any_field_replaced_is_decoded_or_refused(field: str, value: Any) -> None:
    _decodes_or_refuses(json.dumps({**A_REAL_EVENT, field: value}).encode())


@BOUNDED
@given(st.sampled_from(sorted(A_REAL_EVENT["payload"])), json_values)
def test_a_real_payload_with_any_field_replaced_is_decoded_or_refused(field: str, value: Any) -> None:
    _decodes_or_refuses(json.dumps({**A_REAL_EVENT, "payload": {**A_REAL_EVENT["payload"], field: value}}).encode())


@BOUNDED
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from(["[", "{\"a\":", "[{\"b\":"]),
       st.integers(min_value=0, max_value=6000))
def test_deep_nesting_and_huge_numbers_are_refused(depth: int, opener: str, digits: int) -> None:
    _decodes_or_refuses((opener * depth).encode())
    _decodes_or_refuses(f'{{"type": "file.minted", "version": 1{"7" * digits}, "payload": {{}}}}')


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=255)
sizes = st.integers(min_value=0, max_value=2**62)
checksums = st.from_regex(r"xxh3-128:[0-9a-f]{32}", fullmatch=True)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
payloads = st.one_of(
    st.builds(ObservationAnnounced, path=st.text(min_size=1, max_size=300).map(lambda p: "/" + p),
              file_type=st.sampled_from(["uvh5", "ms", "fits"]), name=st.none() | names,
              expected_size=st.none() | sizes, expected_checksum=st.none() | checksums),
    st.builds(FileMinted, name=names, size=sizes, checksum=checksums, file_type=st.sampled_from(["uvh5", "ms"]),
              observation_id=st.none() | names, start_jd=st.none() | st.floats(2.4e6, 2.5e6),
              duration_s=st.none() | st.floats(0, 1e5), origin_site=st.sampled_from(["karoo", "nrao"]),
              uploader=names, created_at=moments,
              produced_by=st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)),
    st.builds(InstanceCreated, file_name=names, site=st.just("karoo"), store=names,
              path=st.text(min_size=1, max_size=200), size=sizes, checksum=checksums, verified_at=moments),
    st.builds(SessionClosed, session_id=names, start_jd=st.floats(2.4e6, 2.5e6), end_jd=st.floats(2.4e6, 2.5e6),
              file_names=st.lists(names, max_size=20)),
    st.builds(JobFailed, run_id=names, job_id=names, action=names, files=st.lists(names, max_size=5),
              attempt=st.integers(1, 10), reason=st.text(max_size=200), will_retry=st.booleans(),
              exit_status=st.none() | st.integers(-255, 255), log_path=st.none() | st.text(max_size=100)),
)


@BOUNDED
@given(payloads, st.sampled_from(["karoo", "nrao"]), moments)
def test_every_event_obsflow_writes_round_trips(payload: Any, site: str, occurred_at: datetime) -> None:
    event = new_event(payload, site=site, producer="ingest", occurred_at=occurred_at)
    assert decode_event(encode_event(event)) == event
    assert decode_event(json.loads(encode_event(event))) == event
    assert isinstance(event.event_id, uuid.UUID)
