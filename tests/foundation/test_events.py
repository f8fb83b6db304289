"""The envelope, routing keys, decoding errors and upcasting (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from shared.bus.patterns import topic_matches
from shared.errors import MalformedEvent, UnknownEventType
from shared.events import decode_event, encode_event, new_event
from shared.events.types import FileMinted, JobFailed, ObservationAnnounced
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


def _minted_with(**changes: object) -> bytes:
    raw = json.loads(encode_event(minted(1)))
    payload = {**raw["payload"], **changes.pop("payload", {})}  # type: ignore[dict-item]
    return json.dumps({**raw, **changes, "payload": payload}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "file.minted"}', "lacks version, payload"),
        (json.dumps({**json.loads(encode_event(minted(1))), "payload": {"name": "x"}}).encode(), "invalid at"),
        # What crash-looped every stream consumer (issue 8, item 4): RecursionError and ValueError in json.loads.
        (b"[" * 100_000, "not valid JSON|nested"),
        (b'{"type": "file.minted", "version": ' + b"9" * 5000 + b', "payload": {}}', "not valid JSON"),
        (b'{"a": ' * 40 + b"1" + b"}" * 40, "nested 40 levels deep"),
        (b"\xff\xfe{}", "not valid JSON in UTF-8"),
        (b" " * (1024**2 + 1), "1048577 bytes; at most 1048576"),
        (_minted_with(version=True), "version an integer"),  # a bool is not a version (item 14)
        (_minted_with(version=0), "versions start at 1"),
        (_minted_with(type=["file.minted"]), "type must be a short string"),
        (_minted_with(payload={"size": True}), "payload.size"),  # nor a size
        (_minted_with(payload={"name": "x" * 256}), "payload.name: .*at most 255"),
        (_minted_with(site="s" * 65), "invalid at site"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        decode_event(body)


def test_a_path_longer_than_path_max_is_a_validation_error() -> None:
    # A 16 MiB path reached ingest and raised OSError (File name too long), retried as transient (item 11).
    announcement = new_event(ObservationAnnounced(path="/data/x.uvh5", file_type="uvh5"), site="karoo",
                             producer="correlator")
    raw = json.loads(encode_event(announcement))
    raw["payload"]["path"] = "/" + "p" * 4096
    with pytest.raises(MalformedEvent, match="payload.path: .*at most 4096"):
        decode_event(json.dumps(raw))
    raw["payload"]["path"] = "/" + "é" * 2048  # 4097 bytes in UTF-8, though 2049 characters
    with pytest.raises(MalformedEvent, match="at most 4096 bytes"):
        decode_event(json.dumps(raw))
    with pytest.raises(MalformedEvent, match="bytes; at most"):
        decode_event(json.dumps({**raw, "payload": {**raw["payload"], "path": "/" + "p" * 16 * 1024**2}}))


def test_the_event_size_limit_is_the_callers() -> None:
    body = encode_event(minted(1))
    assert decode_event(body, max_bytes=len(body)).payload == minted(1).payload
    with pytest.raises(MalformedEvent, match=f"{len(body)} bytes; at most {len(body) - 1}"):
        decode_event(body, max_bytes=len(body) - 1)


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
