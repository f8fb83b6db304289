"""The `obsflow workflow` commands: plan a hera_opm workflow over files, register it, run it, follow its runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.scheduler.cli_runs import register_run_commands
from services.scheduler.workflow import DEFAULT_NIGHT_GAP_DAYS
from shared.cli.commands import help_of

if TYPE_CHECKING:
    from services.scheduler.workflow import PlannedJob
    from shared.cli.output import Output

PLAN_COLUMNS = ("action", "primary file", "files", "waits for", "queue", "mem MB", "ncpu", "args")


def register(subparsers: Any) -> None:
    """Add the `workflow` command (plan, register, run, runs, status, retry) to the obsflow command line."""
    workflow = subparsers.add_parser("workflow", help=help_of("workflow"), description=help_of("workflow"))
    commands = workflow.add_subparsers(dest="workflow_command", required=True, metavar="SUBCOMMAND")
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
    from services.scheduler.workflow import WorkflowError, load_workflow, plan_workflow
    from shared.cli.output import Output

    try:
        files = list(args.files) + _files_from(args.files_from)
        jobs = plan_workflow(load_workflow(Path(args.config)), files, night_gap_days=args.night_gap)
    except (WorkflowError, OSError) as error:
        print(f"obsflow workflow plan: {error}", file=sys.stderr)
        return 2
    out = Output()
    if args.json:
        out.json({"jobs": [job.to_dict() for job in jobs]})
    else:
        print_plan(out, jobs)
    return 0


def _files_from(source: str | None) -> list[str]:
    if source is None:
        return []
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def print_plan(out: Output, jobs: list[PlannedJob]) -> None:
    """A readable table of jobs: one line each, files and prereqs counted, args in full; then the count."""
    rows = [
        (
            job.action,
            os.path.basename(job.primary_file) if job.primary_file else "-",
            len(job.files),
            len(job.prereqs),
            job.queue,
            job.mem_mb,
            "-" if job.ncpu is None else job.ncpu,
            " ".join(os.path.basename(arg) if arg.startswith("/") else arg for arg in job.args),
        )
        for job in jobs
    ]
    out.table(rows, PLAN_COLUMNS, numeric=("files", "waits for", "mem MB", "ncpu"), empty="(no jobs)")
    out.line(f"{len(jobs)} jobs")
