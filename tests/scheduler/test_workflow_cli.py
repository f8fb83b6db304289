"""`obsflow workflow plan`: JSON and table output, and clear errors with exit code 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from services.scheduler.cli import register

DATA = Path(__file__).parent / "data"
FILES = [f"/data/zen.{2459122.30000 + index * 0.00018:.5f}.sum.uvh5" for index in range(12)]


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="obsflow")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_plan_json_lists_every_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("workflow", "plan", str(DATA / "listing1.toml"), *FILES, "--json") == 0
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    assert [job["action"] for job in jobs[:3]] == ["SETUP", "ANT_METRICS", "ADD_LIBRARIAN_ANT_METRICS"]
    required = {"action", "primary_file", "files", "args", "prereqs", "queue", "mem_mb", "ncpu", "timeout"}
    assert all(required <= set(job) for job in jobs)
    assert jobs[-1]["action"] == "TEARDOWN"
    assert ["ANT_METRICS", FILES[0]] in jobs[2]["prereqs"]


def test_plan_table_is_readable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(FILES[6:]) + "\n")
    assert run("workflow", "plan", str(DATA / "listing1.toml"), *FILES[:6], "--files-from", str(listing)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["ACTION", "PRIMARY"]
    assert "XRFI" in out and out.rstrip().endswith("39 jobs")


@pytest.mark.parametrize(
    ("config", "files", "problem"),
    [
        ("bad_configs/bad_missing_prereq.toml", FILES, "prereq FIRSTCAL_METRICS"),
        ("absent.toml", FILES, "cannot read workflow config"),
        ("listing1", [], "no files to plan"),
    ],
)
def test_errors_are_one_clear_line_and_exit_2(
    config: str, files: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    field = Path(__file__).resolve().parents[3] / "shared" / "field" / "hera_opm"
    path = DATA / "listing1.toml" if config == "listing1" else field / config
    assert run("workflow", "plan", str(path), *files) == 2
    captured = capsys.readouterr()
    assert problem in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
