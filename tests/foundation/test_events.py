"""The envelope, routing keys, decoding errors and upcasting (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from shared.bus.patterns import topic_matches
from shared.errors import MalformedEvent, UnknownEventType
from shared.events import decode_event, encode_event
from shared.events.types import FileMinted, JobFailed
from tests.foundation.support import minted

DATA = Path(__file__).parent.parent / "data"


def test_event_round_trips_and_is_immutable() -> None:
    event = minted(1)
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert isinstance(decoded.payload, FileMinted)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        decoded.payload.size = 5  # type: ignore[misc]


def test_routing_key_reads_site_subject_verb_detail() -> None:
    assert minted(1, site="karoo").routing_key == "karoo.file.minted.uvh5"
    assert minted(1, file_type="ant.metrics").routing_key == "karoo.file.minted.ant_metrics"


def test_stored_version_1_event_decodes_as_current_version() -> None:
    stored = (DATA / "file_minted_v1.json").read_bytes()
    event = decode_event(stored)
    assert event.version == FileMinted.version == 2
    assert isinstance(event.payload, FileMinted)
    assert event.payload.start_jd == pytest.approx(2459122.30000)
    assert event.payload.produced_by is None
    assert event.payload.name == "zen.2459122.30000.sum.uvh5"
    assert str(event.event_id) == json.loads(stored)["event_id"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "file.minted"}', "lacks version, payload"),
        (json.dumps({**json.loads(encode_event(minted(1))), "payload": {"name": "x"}}).encode(), "invalid at"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        decode_event(body)


def test_unknown_type_and_future_version_are_refused() -> None:
    raw = json.loads(encode_event(minted(1)))
    with pytest.raises(UnknownEventType, match="unknown event type"):
        decode_event(json.dumps({**raw, "type": "file.exploded"}))
    with pytest.raises(UnknownEventType, match="newer than this build"):
        decode_event(json.dumps({**raw, "version": 99}))


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("*.file.minted.#", "karoo.file.minted.uvh5", True),
        ("*.file.minted.#", "karoo.file.minted", True),
        ("*.file.minted.#", "karoo.instance.created", False),
        ("#.failed.XRFI", "nrao.job.failed.XRFI", True),
        ("karoo.#", "nrao.file.minted.uvh5", False),
        ("*.job.*", "nrao.job.done.XRFI", False),
    ],
)
def test_topic_patterns_match_like_rabbitmq(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_job_routing_detail_is_the_action() -> None:
    from shared.events import new_event

    event = new_event(
        JobFailed(run_id="r", job_id="j", action="XRFI", files=[], attempt=1, reason="exit 1", will_retry=False),
        site="nrao", producer="scheduler",
    )
    assert event.routing_key == "nrao.job.failed.XRFI"
