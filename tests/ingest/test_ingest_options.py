"""`[services.ingest]`: defaults, accepted values, and refusals that name the key."""

from pathlib import Path

import pytest

from services.ingest.options import IngestOptions, default_source_root, ingest_options
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
        ({"source_roots": "/data"}, "source_roots"),
    ],
)
def test_bad_values_are_refused_naming_the_key(raw: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        ingest_options(raw)


def test_without_source_roots_a_site_reads_only_its_incoming_directory(tmp_path: Path) -> None:
    assert ingest_options({}, data_dir=tmp_path).source_roots == (str(tmp_path / "incoming"),)
    assert default_source_root(tmp_path) == tmp_path / "incoming"
    assert ingest_options({"source_roots": []}, data_dir=tmp_path).source_roots == ()  # closed altogether
    assert ingest_options({}).source_roots == ()  # no data directory given: nowhere


def test_source_roots_are_normalised() -> None:
    assert ingest_options({"source_roots": ["/data/raw/", "/mnt//x"]}).source_roots == ("/data/raw", "/mnt/x")


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("/", "'/'"), ("", "empty"), ("data", "relative"), ("/data/../etc", r"'\.\.'"),
        ("/proc", "/proc, which exposes"), ("/proc/1", "/proc, which exposes"), ("/sys/kernel", "/sys"),
        ("/dev", "/dev"),
        ("{data}", "contains the data directory"), ("{parent}", "contains the data directory"),
        ("{store}", "overlaps the store root"), ("{store}/main", "overlaps the store root"),
        ("{link}", "contains the data directory"),
    ],
)
def test_source_roots_that_would_expose_the_server_are_refused(tmp_path: Path, root: str, message: str) -> None:
    data, store = tmp_path / "var", tmp_path / "stores" / "main"
    (tmp_path / "link").symlink_to(tmp_path)  # a root named through a link to where the secrets are
    root = root.format(data=data, parent=tmp_path, store=store, link=tmp_path / "link")
    with pytest.raises(ConfigurationError, match=message) as refused:
        ingest_options({"source_roots": [root]}, data_dir=data, store_roots=[store])
    assert "[services.ingest] source_roots" in str(refused.value)


def test_a_root_inside_the_data_directory_is_allowed(tmp_path: Path) -> None:
    data = tmp_path / "var"
    roots = ingest_options({"source_roots": [f"{data}/correlator"]}, data_dir=data, store_roots=[data / "stores"])
    assert roots.source_roots == (f"{data}/correlator",)
