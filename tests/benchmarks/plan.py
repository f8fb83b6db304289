"""Benchmark: plan_workflow against hera_opm 1.4.0 on the Listing-1-like workflow.

Usage: python -m tests.benchmarks.plan [--quick]
--quick skips hera_opm's build (minutes for 2,000 files) and reports its fields as null.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

from services.scheduler.workflow import load_workflow, plan_workflow

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "scheduler" / "data" / "listing1.toml"


def hera_names(count: int, directory: Path) -> list[str]:
    """HERA-style file paths, one correlator file (0.00018 d) apart."""
    return [str(directory / f"zen.{2459122.30000 + index * 0.00018:.5f}.sum.uvh5") for index in range(count)]


def time_plan(count: int, directory: Path) -> tuple[float, int]:
    """Seconds to plan `count` files (best of 3) and the number of jobs."""
    config = load_workflow(CONFIG)
    files = hera_names(count, directory)
    best = float("inf")
    jobs = 0
    for _ in range(3):
        started = time.perf_counter()
        jobs = len(plan_workflow(config, files))
        best = min(best, time.perf_counter() - started)
    return best, jobs


def time_hera_opm(count: int, directory: Path) -> float:
    """Seconds hera_opm's build_analysis_makeflow_from_config takes for `count` files (one run)."""
    from hera_opm import mf_tools

    files = hera_names(count, directory)
    for path in files:
        Path(path).touch()
    work_dir = directory / "work"
    work_dir.mkdir()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf_tools.build_analysis_makeflow_from_config(files, str(CONFIG), work_dir=str(work_dir))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip hera_opm's build")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        plan_2000, jobs_2000 = time_plan(2_000, directory)
        print(f"plan_workflow  2,000 files: {plan_2000:.3f} s ({jobs_2000} jobs)", file=sys.stderr)
        plan_20000, jobs_20000 = time_plan(20_000, directory)
        print(f"plan_workflow 20,000 files: {plan_20000:.3f} s ({jobs_20000} jobs)", file=sys.stderr)
        hera_2000 = None if args.quick else time_hera_opm(2_000, directory)
        if hera_2000 is not None:
            print(f"hera_opm       2,000 files: {hera_2000:.1f} s", file=sys.stderr)
    figures = {
        "plan_2000_s": round(plan_2000, 4),
        "plan_20000_s": round(plan_20000, 4),
        "hera_opm_2000_s": None if hera_2000 is None else round(hera_2000, 2),
        "ratio_2000": None if hera_2000 is None else round(hera_2000 / plan_2000, 1),
        "jobs_20000": jobs_20000,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
