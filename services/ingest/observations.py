"""Which observation a file belongs to, read from its name by a parser chosen per file type.

HERA's convention: ``zen.<Julian date>.<product...>``, e.g. ``zen.2459122.30000.sum.uvh5``. The
observation id is the ``zen.<JD>`` prefix exactly as written (``zen.2459122.30000``), its start is that
Julian date, and its duration a configured constant: HERA_DEFAULT_DURATION_S = 16.1 s (one correlator
file holds ~16 s of data; a site with another integration length configures its own). Derived products
(``zen.2459122.30000.sum.ant_metrics.hdf5``) keep the prefix of their earliest input and therefore the
same observation. A name that matches no convention belongs to no observation (allowed: None).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

HERA_DEFAULT_DURATION_S = 16.1


@dataclass(frozen=True)
class ObservationInfo:
    """One correlator output: its id, its start as a Julian date and its length in seconds."""

    observation_id: str
    start_jd: float
    duration_s: float


class ObservationParser(Protocol):
    """Reads the observation a file belongs to from its name; None when the name says nothing."""

    def parse(self, name: str) -> ObservationInfo | None: ...


@dataclass(frozen=True)
class HeraParser:
    """HERA's ``zen.<JD integer>.<JD decimals>[.<product>...]`` names."""

    duration_s: float = HERA_DEFAULT_DURATION_S

    # Seven-digit integer part: every Julian date from 1757 to 2739; decimals as the correlator wrote them.
    _pattern = re.compile(r"(zen\.([0-9]{7})\.([0-9]+))(?:\..+)?")

    def parse(self, name: str) -> ObservationInfo | None:
        """The observation of a HERA file name, or None if it does not follow the convention."""
        match = self._pattern.fullmatch(name)
        if match is None:
            return None
        observation_id, whole, decimals = match.groups()
        return ObservationInfo(
            observation_id=observation_id,
            start_jd=float(f"{whole}.{decimals}"),
            duration_s=self.duration_s,
        )


@dataclass(frozen=True)
class NoObservationParser:
    """For file types that never belong to an observation (calibration tables, logs...)."""

    def parse(self, name: str) -> ObservationInfo | None:
        """Always None."""
        return None


@dataclass(frozen=True)
class ObservationParsers:
    """The parser for each file type, and the one used for any type not listed."""

    default: ObservationParser = field(default_factory=HeraParser)
    by_file_type: Mapping[str, ObservationParser] = field(default_factory=dict)

    def parser_for(self, file_type: str) -> ObservationParser:
        """The parser registered for file_type, else the default."""
        return self.by_file_type.get(file_type, self.default)

    def with_parser(self, file_type: str, parser: ObservationParser) -> ObservationParsers:
        """A copy of this registry with parser used for file_type."""
        return ObservationParsers(self.default, {**self.by_file_type, file_type: parser})


DEFAULT_PARSERS = ObservationParsers()


def parse_observation(
    name: str, file_type: str, parsers: ObservationParsers = DEFAULT_PARSERS
) -> ObservationInfo | None:
    """The observation a file named name of type file_type belongs to, or None (default: HERA's rule)."""
    return parsers.parser_for(file_type).parse(name)
