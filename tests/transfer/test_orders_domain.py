"""The pure parts, with plain values: what an order request must say, and the [services.transfer] options."""

from __future__ import annotations

import pytest

from services.transfer.options import TransferOptions
from services.transfer.orders import MAX_LABEL, OrderRefused, OrderRequest
from shared.errors import ConfigurationError, PermanentError

PEERS = ("nrao", "penn")


def parse(**body: object) -> OrderRequest:
    return OrderRequest.parse({"search": {"file_type": {"is": "uvh5"}}, "destination": "nrao", **body},
                              site="karoo", peers=PEERS)


def test_a_request_is_parsed_with_its_defaults() -> None:
    assert parse() == OrderRequest(search={"file_type": {"is": "uvh5"}}, destination="nrao")
    full = parse(store="main", manager="globus", priority=-1000, label="x" * MAX_LABEL, destination="penn")
    assert (full.store, full.manager, full.priority, full.destination) == ("main", "globus", -1000, "penn")
    assert parse(store=None, manager=None).store is None


@pytest.mark.parametrize(("body", "code", "words"), [
    ({"destination": "karoo"}, "unknown_destination", "is this site"),
    ({"destination": "mars"}, "unknown_destination", "declared peers are: nrao, penn"),
    ({"destination": None}, "invalid_order", "nrao, penn"),
    ({"search": "uvh5"}, "invalid_order", "JSON object"),
    ({"search": {"name": {"in": ["z" * 100] * 700}}}, "invalid_order", "at most 65536"),
    ({"priority": 1001}, "invalid_order", "-1000 to 1000"),
    ({"priority": 1.5}, "invalid_order", "whole number"),
    ({"priority": False}, "invalid_order", "whole number"),
    ({"label": "x" * (MAX_LABEL + 1)}, "invalid_order", "at most 200"),
    ({"label": "a\x00b"}, "invalid_order", "NUL"),
    ({"manager": "scp"}, "invalid_order", "http, local, globus"),
    ({"store": ""}, "invalid_order", "store name"),
    ({"store": "a/b"}, "invalid_order", "store name"),
    ({"colour": "red"}, "invalid_order", "unknown keys ['colour']"),
])
def test_refusals_say_what_to_send(body: dict, code: str, words: str) -> None:
    with pytest.raises(OrderRefused) as refused:
        parse(**body)
    assert refused.value.code == code and words in str(refused.value)
    assert isinstance(refused.value, PermanentError)


def test_options_defaults_backoff_and_refusals() -> None:
    options = TransferOptions.from_raw({})
    assert (options.max_attempts, options.backoff_base_s, options.backoff_cap_s) == (8, 5.0, 3600.0)
    assert (options.catch_up_interval_s, options.http_concurrency_initial, options.http_concurrency_max) == (
        300.0, 4, 32)
    assert [options.backoff_s(n) for n in range(5)] == [0.0, 5.0, 10.0, 20.0, 40.0]
    assert options.backoff_s(12) == 3600.0 and options.backoff_s(10_000) == 3600.0
    assert TransferOptions.from_raw({"max_attempts": 2, "backoff_base_s": 1}).max_attempts == 2
    for raw, words in (({"max_attempts": 0}, "at least 1"), ({"max_attempts": True}, "whole number"),
                       ({"backoff_base_s": -1}, "positive"), ({"catch_up_interval_s": float("inf")}, "positive"),
                       ({"http_concurrency_initial": 64}, "must not exceed http_concurrency_max"),
                       ({"max_atempts": 3}, "unknown [services.transfer] settings ['max_atempts']")):
        with pytest.raises(ConfigurationError, match=words.replace("[", r"\[").replace("]", r"\]")):
            TransferOptions.from_raw(raw)
