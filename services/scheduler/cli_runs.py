"""`obsflow workflow register|run|runs|status|retry`: the run commands, through the scheduler's HTTP API.

The API is at `http://{http_host}:{http_port('scheduler')}/api/v1`; the token comes from OBSFLOW_TOKEN.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from shared.errors import ObsflowError
from shared.settings import load_settings

TOKEN_ENV = "OBSFLOW_TOKEN"


class SchedulerRequestError(ObsflowError):
    """The scheduler refused a request or could not be reached; the message says why and what to do."""


def register_run_commands(commands: Any) -> None:
    """Add the run subcommands to `obsflow workflow`."""
    reg = commands.add_parser("register", help="register a workflow to run on session.closed / file.minted events")
    reg.add_argument("workflow_config", metavar="CONFIG", help="hera_opm TOML workflow config")
    reg.add_argument("--on", required=True, choices=("session.closed", "file.minted", "manual"), dest="trigger")
    reg.add_argument("--match", help='file.minted only: a JSON clause tree, e.g. \'{"file_type": {"is": "uvh5"}}\'')
    reg.add_argument("--name", help="workflow name (default: the config file's name without .toml)")
    reg.add_argument("--backend", choices=("local", "slurm", "pbs"), help="default: the scheduler's backend")
    reg.set_defaults(func=register_workflow)
    run = commands.add_parser("run", help="run a workflow config (or a registered workflow) over files now")
    run.add_argument("workflow_config", metavar="CONFIG", help="hera_opm TOML config, or a registered workflow's name")
    run.add_argument("files", nargs="+", metavar="FILE")
    run.add_argument("--backend", choices=("local", "slurm", "pbs"))
    run.set_defaults(func=start_run)
    runs = commands.add_parser("runs", help="list recent runs")
    runs.add_argument("--limit", type=int, default=50)
    runs.set_defaults(func=list_runs)
    status = commands.add_parser("status", help="show a run: its jobs' states and the last error of failed jobs")
    status.add_argument("run_id")
    status.add_argument("--json", action="store_true", help="print the whole run, provenance included, as JSON")
    status.set_defaults(func=show_run)
    retry = commands.add_parser("retry", help="run a finished run's jobs again")
    retry.add_argument("run_id")
    retry.add_argument("--failed", action="store_true", help="only the failed jobs (and what they blocked)")
    retry.set_defaults(func=retry_run)


async def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    settings = load_settings(getattr(args, "config", None))
    url = f"http://{settings.http_host}:{settings.http_port('scheduler')}/api/v1{path}"
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise SchedulerRequestError(f"set {TOKEN_ENV} to a token (`obsflow accounts token NAME`) to use the scheduler")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session, session.request(method, url, json=body) as r:
            text = await r.text()
    except aiohttp.ClientError as e:
        raise SchedulerRequestError(
            f"cannot reach the scheduler at {url}: {e}; is `obsflow service scheduler` running?"
        ) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchedulerRequestError(f"the scheduler answered {r.status} with non-JSON: {text[:200]}") from e
    if r.status >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise SchedulerRequestError(f"the scheduler refused: {error.get('message', text[:200])} (HTTP {r.status})")
    return data


def _read_config(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SchedulerRequestError(f"cannot read workflow config {path}: {e.strerror or e}") from e


async def register_workflow(args: argparse.Namespace) -> int:
    """POST /workflows."""
    body: dict[str, Any] = {
        "name": args.name or Path(args.workflow_config).stem,
        "config_text": _read_config(args.workflow_config),
        "trigger": args.trigger,
    }
    if args.match:
        try:
            body["match"] = json.loads(args.match)
        except json.JSONDecodeError as e:
            raise SchedulerRequestError(f"--match is not JSON: {e}") from e
    if args.backend:
        body["backend"] = args.backend
    data = await _call(args, "POST", "/workflows", body)
    print(f"registered workflow {data['name']} (on {data['trigger']}, backend {data['backend']})")
    return 0


def run_request(config: str, files: list[str], backend: str | None) -> dict[str, Any]:
    """The POST /runs body: a config file's text (or a registered workflow's name) and absolute file paths."""
    body: dict[str, Any] = {"files": [os.path.abspath(f) if os.path.exists(f) else f for f in files]}
    if Path(config).is_file():
        body["config_text"] = _read_config(config)
    else:
        body["workflow"] = config
    if backend:
        body["backend"] = backend
    return body


async def start_run(args: argparse.Namespace) -> int:
    """POST /runs with a config file's text, or the name of a registered workflow."""
    data = await _call(args, "POST", "/runs", run_request(args.workflow_config, args.files, args.backend))
    print(f"run {data['run_id']} started: {data['jobs']} jobs in {data['workdir']}")
    return 0


async def list_runs(args: argparse.Namespace) -> int:
    """GET /runs as a table."""
    data = await _call(args, "GET", f"/runs?limit={args.limit}")
    rows: list[tuple[str, ...]] = [("RUN", "WORKFLOW", "STATE", "FILES", "JOBS", "CREATED")]
    for r in data["runs"]:
        jobs = " ".join(f"{k}={v}" for k, v in sorted(r["jobs"].items()))
        rows.append((r["run_id"], r["workflow"] or "-", r["state"], str(r["files"]), jobs, r["created_at"][:19]))
    print(_table(rows))
    return 0


async def show_run(args: argparse.Namespace) -> int:
    """GET /runs/{id}: a table of actions × states, then the last error of each failed job."""
    data = await _call(args, "GET", f"/runs/{args.run_id}")
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(format_run_status(data))
    return 0


def format_run_status(run: dict[str, Any]) -> str:
    """The run's header, a table of actions × job states, and the last error of each failed job."""
    states = sorted({j["state"] for j in run["jobs"]})
    actions: dict[str, dict[str, int]] = {}
    for job in run["jobs"]:
        counts = actions.setdefault(job["action"], {})
        counts[job["state"]] = counts.get(job["state"], 0) + 1
    rows: list[tuple[str, ...]] = [("ACTION", *(s.upper() for s in states))]
    rows += [(action, *(str(counts.get(s, 0)) for s in states)) for action, counts in actions.items()]
    lines = [
        f"run {run['run_id']} ({run['workflow'] or 'adhoc'}, {run['backend']}): {run['state']}",
        f"workdir {run['workdir']}", "", _table(rows),
    ]
    failed = [j for j in run["jobs"] if j["state"] == "failed"]
    if failed:
        lines += ["", "failed jobs:"] + [f"  {j['job_key']}: {j['last_error']}" for j in failed]
    return "\n".join(lines)


async def retry_run(args: argparse.Namespace) -> int:
    """POST /runs/{id}/retry."""
    data = await _call(args, "POST", f"/runs/{args.run_id}/retry", {"failed_only": bool(args.failed)})
    print(f"run {data['run_id']}: {len(data['restarted_jobs'])} jobs will run again")
    return 0


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
