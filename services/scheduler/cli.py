"""The `obsflow workflow` commands: plan a hera_opm workflow over files, register it, run it, follow its runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from services.scheduler.cli_runs import register_run_commands
from services.scheduler.workflow import DEFAULT_NIGHT_GAP_DAYS, PlannedJob, WorkflowError, load_workflow, plan_workflow


def register(subparsers: Any) -> None:
    """Add the `workflow` command (plan, register, run, runs, status, retry) to the obsflow command line."""
    workflow = subparsers.add_parser("workflow", help="plan, register and run hera_opm workflows")
    commands = workflow.add_subparsers(dest="workflow_command", required=True)
    plan = commands.add_parser("plan", help="show the jobs a workflow config makes for a list of files")
    plan.add_argument("config", help="hera_opm TOML workflow config")
    plan.add_argument("files", nargs="*", metavar="FILE", help="input files (any order, one or more nights)")
    plan.add_argument("--files-from", metavar="PATH", help="read more input files from PATH, one a line (- = stdin)")
    plan.add_argument("--json", action="store_true", help="print the jobs as one JSON object")
    plan.add_argument(
        "--night-gap",
        type=float,
        default=DEFAULT_NIGHT_GAP_DAYS,
        metavar="DAYS",
        help=f"a gap longer than this between files starts a new night (default {DEFAULT_NIGHT_GAP_DAYS})",
    )
    plan.set_defaults(func=run_plan)
    register_run_commands(commands)


def run_plan(args: argparse.Namespace) -> int:
    """Plan the workflow over the given files and print it; 2 with a message on stderr if it cannot."""
    try:
        files = list(args.files) + _files_from(args.files_from)
        jobs = plan_workflow(load_workflow(Path(args.config)), files, night_gap_days=args.night_gap)
    except (WorkflowError, OSError) as error:
        print(f"obsflow workflow plan: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"jobs": [job.to_dict() for job in jobs]}, indent=1))
    else:
        print(format_table(jobs))
    return 0


def _files_from(source: str | None) -> list[str]:
    if source is None:
        return []
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def format_table(jobs: list[PlannedJob]) -> str:
    """A readable table of jobs: one line each, files and prereqs counted, args in full."""
    header = ("ACTION", "PRIMARY FILE", "FILES", "WAITS FOR", "QUEUE", "MEM MB", "NCPU", "ARGS")
    rows = [header]
    for job in jobs:
        primary = os.path.basename(job.primary_file) if job.primary_file else "-"
        rows.append(
            (
                job.action,
                primary,
                str(len(job.files)),
                str(len(job.prereqs)),
                job.queue,
                str(job.mem_mb),
                "-" if job.ncpu is None else str(job.ncpu),
                " ".join(os.path.basename(arg) if arg.startswith("/") else arg for arg in job.args),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows
    ]
    lines.append(f"{len(jobs)} jobs")
    return "\n".join(line.rstrip() for line in lines)
