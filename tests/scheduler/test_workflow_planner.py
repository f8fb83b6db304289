"""plan_workflow: time order, nights, input checks, JSON form and linear speed."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from services.scheduler.workflow import WorkflowFilesError, julian_date_of, load_workflow, plan_workflow

DATA = Path(__file__).parent / "data"


def hera_names(count: int, first_jd: float = 2459122.30000, directory: str = "/data") -> list[str]:
    return [f"{directory}/zen.{first_jd + index * 0.00018:.5f}.sum.uvh5" for index in range(count)]


@pytest.fixture(scope="module")
def listing1():
    return load_workflow(DATA / "listing1.toml")


def test_julian_dates_come_from_hera_names() -> None:
    assert julian_date_of("/x/zen.2459122.30000.sum.ant_metrics.hdf5") == 2459122.3
    assert julian_date_of("zen.2459122.3.uvh5") == 2459122.3
    assert julian_date_of("calibration.h5") is None


def test_any_input_order_gives_the_same_plan(listing1) -> None:
    files = hera_names(57)
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    assert plan_workflow(listing1, shuffled) == plan_workflow(listing1, files)


def test_chunks_and_neighbours_stay_within_a_night(listing1) -> None:
    first, second = hera_names(15), hera_names(15, first_jd=2459123.30000)
    jobs = plan_workflow(listing1, second + first)
    xrfi = [job for job in jobs if job.action == "XRFI"]
    assert [len(job.files) for job in xrfi] == [15, 15]  # 10 plus 5 stragglers, per night
    assert all(set(job.files) <= set(first) or set(job.files) <= set(second) for job in xrfi)
    assert {job.action for job in jobs if job.primary_file is None} == {"SETUP", "TEARDOWN"}
    assert jobs[-1].args == ("--night-teardown",)
    assert len(jobs[-1].prereqs) == 30


def test_the_night_gap_is_a_parameter(listing1) -> None:
    files = hera_names(15) + hera_names(15, first_jd=2459122.30000 + 0.05)

    def xrfi_chunk_sizes(**gap: float) -> list[int]:
        return [len(job.files) for job in plan_workflow(listing1, files, **gap) if job.action == "XRFI"]

    assert xrfi_chunk_sizes() == [10, 10, 10]  # 0.05 d apart: one night with the default gap of 0.1 d
    assert xrfi_chunk_sizes(night_gap_days=0.01) == [15, 15]


def test_files_without_a_date_are_planned_in_name_order(listing1) -> None:
    jobs = plan_workflow(listing1, ["/d/b.uvh5", "/d/a.uvh5"])
    assert [job.primary_file for job in jobs if job.action == "ANT_METRICS"] == ["/d/a.uvh5", "/d/b.uvh5"]


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ([], "no files to plan"),
        (["/a/zen.2459122.30000.uvh5", "/b/zen.2459122.30000.uvh5"], "share the name"),
        (["/a/zen 2459122.30000.uvh5"], "whitespace"),
        (["/a/"], "names a directory"),
    ],
)
def test_file_lists_that_cannot_be_planned_are_refused(listing1, files: list[str], problem: str) -> None:
    with pytest.raises(WorkflowFilesError, match=problem):
        plan_workflow(listing1, files)


def test_jobs_have_a_json_form(listing1) -> None:
    job = next(job for job in plan_workflow(listing1, hera_names(12)) if job.action == "XRFI")
    form = json.loads(job.to_json())
    assert form == job.to_dict()
    assert form["prereqs"][0] == ["SETUP", None]
    assert form["args"][1:] == form["files"]
    assert (form["mem_mb"], form["ncpu"], form["queue"], form["timeout"]) == (64000, 4, "hera", "24h")


def test_twenty_thousand_files_plan_in_linear_time(listing1) -> None:
    files = hera_names(20_000)
    started = time.perf_counter()
    jobs = plan_workflow(listing1, files)
    elapsed = time.perf_counter() - started
    assert len(jobs) == 2 + 3 * 20_000 + 2_000
    assert elapsed < 6.0, f"planning 20,000 files took {elapsed:.1f} s: something is quadratic"
