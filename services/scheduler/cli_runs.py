"""`obsflow workflow register|run|runs|status|retry`: the run commands, through the Python client.

The scheduler's API is at `http://{http_host}:{http_port('scheduler')}/api/v1`; the token comes from --token,
OBSFLOW_TOKEN or ~/.config/obsflow/token.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import ObsflowError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from shared.api.scheduler import RunDetail
    from shared.cli.output import Output

WATCH_POLL_S = 2.0


class WorkflowUsageError(ObsflowError):
    """A workflow command that cannot be sent as given; the message says what to write."""


def register_run_commands(commands: Any) -> None:
    """Add the run subcommands to `obsflow workflow`."""
    reg = commands.add_parser("register", help="register a workflow to run on session.closed / file.minted events")
    reg.add_argument("workflow_config", metavar="CONFIG", help="hera_opm TOML workflow config")
    reg.add_argument("--on", required=True, choices=("session.closed", "file.minted", "manual"), dest="trigger")
    reg.add_argument("--match", help='file.minted only: a JSON clause tree, e.g. \'{"file_type": {"is": "uvh5"}}\'')
    reg.add_argument("--name", help="workflow name (default: the config file's name without .toml)")
    reg.add_argument("--backend", choices=("local", "slurm", "pbs"), help="default: the scheduler's backend")
    _common(reg, "the registration")
    reg.set_defaults(func=register_workflow)
    run = commands.add_parser("run", help="run a workflow config (or a registered workflow) over files now")
    run.add_argument("workflow_config", metavar="CONFIG", help="hera_opm TOML config, or a registered workflow's name")
    run.add_argument("files", nargs="+", metavar="FILE")
    run.add_argument("--backend", choices=("local", "slurm", "pbs"))
    _common(run, "the started run")
    run.set_defaults(func=start_run)
    runs = commands.add_parser("runs", help="list recent runs")
    runs.add_argument("--limit", type=int, default=50)
    _common(runs, "the runs")
    runs.set_defaults(func=list_runs)
    status = commands.add_parser("status", help="show a run: its jobs' states and the last error of failed jobs")
    status.add_argument("run_id")
    status.add_argument("--watch", action="store_true",
                        help="follow the run until it finishes (live on a terminal; piped, printed once at the end)")
    _common(status, "the whole run, provenance included,")
    status.set_defaults(func=show_run)
    retry = commands.add_parser("retry", help="run a finished run's jobs again")
    retry.add_argument("run_id")
    retry.add_argument("--failed", action="store_true", help="only the failed jobs (and what they blocked)")
    _common(retry, "the jobs that will run again")
    retry.set_defaults(func=retry_run)


def _common(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON document")
    parser.add_argument("--token", help="API token (default: $OBSFLOW_TOKEN or ~/.config/obsflow/token)")


def _read_config(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise WorkflowUsageError(f"cannot read workflow config {path}: {reason}") from e


def _output() -> Output:
    from shared.cli.output import Output

    return Output()


async def register_workflow(args: argparse.Namespace) -> int:
    """Register a workflow config and what starts it."""
    from shared.cli.connect import client_for

    match = None
    if args.match:
        try:
            match = json.loads(args.match)
        except json.JSONDecodeError as e:
            raise WorkflowUsageError(f"--match is not JSON ({e}); e.g. '{{\"file_type\": {{\"is\": \"uvh5\"}}}}'") \
                from e
    name = args.name or Path(args.workflow_config).stem
    config_text = _read_config(args.workflow_config)
    async with client_for(args) as client:
        data = await client.register_workflow(name, config_text, trigger=args.trigger, match=match,
                                              backend=args.backend)
    out = _output()
    if args.json:
        out.json(data)
    else:
        out.line(f"registered workflow {data.name} (on {data.trigger}, backend {data.backend})")
    return 0


def run_request(config: str, files: list[str]) -> dict[str, Any]:
    """What to start: a config file's text (or a registered workflow's name), and the files, absolute when they
    exist here."""
    request: dict[str, Any] = {"files": [os.path.abspath(f) if os.path.exists(f) else f for f in files]}
    if Path(config).is_file():
        request["config_text"] = _read_config(config)
    else:
        request["workflow"] = config
    return request


async def start_run(args: argparse.Namespace) -> int:
    """Start a run of a config file's text, or of a registered workflow, over files."""
    import asyncio

    from shared.cli.connect import client_for

    request = await asyncio.to_thread(run_request, args.workflow_config, args.files)
    async with client_for(args) as client:
        data = await client.start_run(request["files"], workflow=request.get("workflow"),
                                      config_text=request.get("config_text"), backend=args.backend)
    out = _output()
    if args.json:
        out.json(data)
    else:
        out.line(f"run {data.run_id} started: {data.jobs} jobs in {data.workdir}")
    return 0


async def list_runs(args: argparse.Namespace) -> int:
    """The newest runs, as a table."""
    from shared.cli.connect import client_for

    async with client_for(args) as client:
        runs = await client.runs(args.limit)
    out = _output()
    if args.json:
        out.json({"runs": runs})
        return 0
    rows = [(r.run_id, r.workflow or "-", r.state, r.files, " ".join(f"{k}={v}" for k, v in sorted(r.jobs.items())),
             r.created_at) for r in runs]
    out.table(rows, ("run", "workflow", "state", "files", "jobs", "created_at"), numeric=("files",),
              empty="(no runs yet)")
    return 0


async def show_run(args: argparse.Namespace) -> int:
    """One run: a table of actions × states, then the last error of each failed job (followed live with --watch)."""
    from shared.cli.connect import client_for

    out = _output()
    async with client_for(args) as client:
        run = await client.run(args.run_id)
        if args.watch:
            run = await _watch(out, client, run)
    if args.json:
        out.json(run)
    elif not (args.watch and out.terminal):  # a live display has shown the final state already
        out.render(run_status(out, run))
    return 0


async def _watch(out: Output, client: Any, run: RunDetail) -> RunDetail:
    """Poll the run until it finishes, redrawing its status in place on a terminal."""
    import asyncio

    from rich.live import Live

    if not out.terminal:
        return await client.wait_for_run(run.run_id, timeout_s=float("inf"), poll_s=WATCH_POLL_S)
    with Live(run_status(out, run), console=out.console, auto_refresh=False) as live:
        while not run.finished:
            await asyncio.sleep(WATCH_POLL_S)  # the API has no push of run states: poll it
            run = await client.run(run.run_id)
            live.update(run_status(out, run), refresh=True)
    return run


def run_status(out: Output, run: RunDetail) -> RenderableType:
    """The run's header, a table of actions × job states, and the last error of each failed job."""
    from rich.console import Group
    from rich.text import Text

    states = sorted({job.state for job in run.jobs})
    actions: dict[str, dict[str, int]] = {}
    for job in run.jobs:
        counts = actions.setdefault(job.action, {})
        counts[job.state] = counts.get(job.state, 0) + 1
    table = out.table_of([(action, *(counts.get(s, 0) for s in states)) for action, counts in actions.items()],
                         ("action", *states), numeric=states)
    parts: list[RenderableType] = [
        Text(f"run {run.run_id} ({run.workflow or 'adhoc'}, {run.backend}): {run.state}"),
        Text(f"workdir {run.workdir}"), Text(""), table,
    ]
    failed = [job for job in run.jobs if job.state == "failed"]
    if failed:
        parts += [Text(""), Text("failed jobs:"), *(Text(f"  {job.job_key}: {job.last_error}") for job in failed)]
    return Group(*parts)


async def retry_run(args: argparse.Namespace) -> int:
    """Run a finished run's jobs again (only the failed ones with --failed)."""
    from shared.cli.connect import client_for

    async with client_for(args) as client:
        data = await client.retry_run(args.run_id, failed_only=bool(args.failed))
    out = _output()
    if args.json:
        out.json(data)
    else:
        out.line(f"run {data.run_id}: {len(data.restarted_jobs)} jobs will run again")
    return 0
