"""Ordering input files by observation time and cutting them into nights (observing sessions)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.scheduler.workflow.errors import WorkflowFilesError

DEFAULT_NIGHT_GAP_DAYS = 0.1

# A Julian date as HERA writes it in names (zen.2459122.30000.sum.uvh5): seven digits, a dot, decimals.
_JULIAN_DATE = re.compile(r"(?<![0-9])([0-9]{7}\.[0-9]+)")
# Characters that would change how a task script's command line is split.
_UNSAFE_IN_NAME = re.compile(r"[\s'\"\\`$]")


@dataclass(frozen=True, slots=True)
class Observation:
    """One input file: the path as given, its base name, absolute path, folder and Julian date (if any)."""

    path: str
    name: str
    abspath: str
    directory: str
    julian_date: float | None


def julian_date_of(name: str) -> float | None:
    """The Julian date in a HERA-style file name, or None when the name carries none."""
    match = _JULIAN_DATE.search(posixpath.basename(name))
    return float(match.group(1)) if match else None


def _observation(path: str) -> Observation:
    if _UNSAFE_IN_NAME.search(path):
        raise WorkflowFilesError(
            f"file {path!r} has whitespace, quotes, backslashes or $ in its path; task scripts could not "
            "receive it as one argument, so rename it"
        )
    name = os.path.basename(path)
    if not name:
        raise WorkflowFilesError(f"{path!r} names a directory, not a file; drop the trailing slash")
    abspath = os.path.abspath(path)
    return Observation(
        path=path,
        name=name,
        abspath=abspath,
        directory=os.path.dirname(abspath),
        julian_date=julian_date_of(name),
    )


def group_into_nights(files: Sequence[str], night_gap_days: float = DEFAULT_NIGHT_GAP_DAYS) -> list[list[Observation]]:
    """Sort files by time (then name) and split them where consecutive dates are > night_gap_days apart.

    Files whose names carry no Julian date are ordered by name and form one last group.
    """
    if not files:
        raise WorkflowFilesError("no files to plan; give at least one input file")
    if night_gap_days <= 0:
        raise WorkflowFilesError(f"the night gap must be a positive number of days, not {night_gap_days}")
    observations = [_observation(path) for path in files]
    _refuse_duplicate_names(observations)
    dated = sorted(
        ((o.julian_date, o) for o in observations if o.julian_date is not None),
        key=lambda d: (d[0], d[1].name),
    )
    undated = sorted((o for o in observations if o.julian_date is None), key=lambda o: o.name)
    nights: list[list[Observation]] = []
    previous: float | None = None
    for date, observation in dated:
        if previous is None or date - previous > night_gap_days:
            nights.append([])
        nights[-1].append(observation)
        previous = date
    if undated:
        nights.append(undated)
    return nights


def _refuse_duplicate_names(observations: list[Observation]) -> None:
    seen: dict[str, str] = {}
    for observation in observations:
        if observation.name in seen:
            raise WorkflowFilesError(
                f"{observation.path!r} and {seen[observation.name]!r} share the name {observation.name!r}; "
                "jobs are named after files, so give each file once"
            )
        seen[observation.name] = observation.path
