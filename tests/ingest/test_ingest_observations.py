"""Observations read from file names: HERA's convention, derived products, unknown names."""

import pytest

from services.ingest.observations import (
    HERA_DEFAULT_DURATION_S,
    HeraParser,
    NoObservationParser,
    ObservationInfo,
    ObservationParsers,
    parse_observation,
)


def test_raw_hera_file() -> None:
    assert parse_observation("zen.2459122.30000.sum.uvh5", "uvh5") == ObservationInfo(
        observation_id="zen.2459122.30000", start_jd=2459122.3, duration_s=HERA_DEFAULT_DURATION_S
    )
    assert pytest.approx(16.1) == HERA_DEFAULT_DURATION_S


@pytest.mark.parametrize(
    "name",
    [
        "zen.2459122.30000.sum.ant_metrics.hdf5",
        "zen.2459122.30000.sum.smooth_calibrated.uvh5",
        "zen.2459122.30000.diff.uvh5",
        "zen.2459122.30000.ms",
        "zen.2459122.30000",
    ],
)
def test_derived_products_keep_the_observation_of_their_prefix(name: str) -> None:
    info = parse_observation(name, "hdf5")
    assert info is not None
    assert info.observation_id == "zen.2459122.30000"
    assert info.start_jd == pytest.approx(2459122.30000)


def test_decimals_are_kept_as_written() -> None:
    info = parse_observation("zen.2459122.345678.sum.uvh5", "uvh5")
    assert info is not None
    assert info.observation_id == "zen.2459122.345678"
    assert info.start_jd == pytest.approx(2459122.345678)


@pytest.mark.parametrize(
    "name",
    [
        "calibration.txt",
        "zen.2459122.sum.uvh5",
        "zen.245912.30000.sum.uvh5",
        "zen.2459122.30000x.uvh5",
        "zen.2459122.30000.",
        "zen.2459122.30000\n",
        "xzen.2459122.30000.uvh5",
        "zen.2459122.\u0663.uvh5",
        "",
    ],
)
def test_unknown_names_belong_to_no_observation(name: str) -> None:
    assert parse_observation(name, "uvh5") is None


def test_parsers_are_chosen_per_file_type_and_duration_is_configurable() -> None:
    parsers = ObservationParsers(default=HeraParser(duration_s=10.7)).with_parser("log", NoObservationParser())
    assert parse_observation("zen.2459122.30000.log", "log", parsers) is None
    info = parse_observation("zen.2459122.30000.uvh5", "uvh5", parsers)
    assert info is not None and info.duration_s == 10.7
