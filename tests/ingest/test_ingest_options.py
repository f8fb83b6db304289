"""`[services.ingest]`: defaults, accepted values, and refusals that name the key."""

import pytest

from services.ingest.options import IngestOptions, ingest_options
from shared.errors import ConfigurationError


def test_defaults_batch_announcements_and_write_directly() -> None:
    options = ingest_options({})
    assert options == IngestOptions()
    assert options.prefetch == 64 and options.copy_threads == 4 and options.direct_io is True


def test_values_are_taken() -> None:
    options = ingest_options({"prefetch": 8, "copy_threads": 2, "direct_io": False, "source_roots": ["/data"]})
    taken = (options.prefetch, options.copy_threads, options.direct_io, options.source_roots)
    assert taken == (8, 2, False, ("/data",))


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"direct_io": "no"}, "direct_io"),
        ({"copy_threads": 0}, "copy_threads"),
        ({"prefetch": "many"}, "prefetch"),
        ({"direct_i0": True}, "direct_i0"),
        ({"source_roots": ["relative"]}, "source_roots"),
    ],
)
def test_bad_values_are_refused_naming_the_key(raw: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        ingest_options(raw)
