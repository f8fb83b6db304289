"""What a run was: its config, inputs, the software in the job environment, and where and when each attempt ran.

ilifu's rule: keep logs, software versions and input parameters of every production run with its products.
The software record is taken once per environment and cached for a while (a real-time workflow starts a run
per file; `pip freeze` takes a second). Its commands run as the local jobs' user (`run_as`), with that user's
environment, exactly like a job: they source the same setup scripts, which the caller has checked beneath the
script roots.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from services.scheduler.backends.identity import JobUser
from services.scheduler.backends.safe_files import open_new

log = structlog.get_logger()

ENVIRONMENT_CACHE_S = 600.0
_cache: dict[tuple[str | None, str | None, str, int | None], tuple[float, dict[str, Any]]] = {}


async def _run(
    command: str, timeout_s: float, user: JobUser | None, cwd: str | None = None
) -> tuple[int | None, str]:
    """Run a bash command (as `user`); its exit code and output (stdout, else stderr), or None and a note on timeout."""
    identity: dict[str, Any] = {}
    if user is not None:
        identity = {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups),
                    "env": user.environment(os.environ)}
    try:
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", command, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, **identity,
        )
    except OSError as e:  # e.g. the jobs' user cannot enter `cwd`
        return None, f"could not run: {e}"
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None, f"did not finish within {timeout_s:.0f} s"
    return process.returncode, (out or err).decode(errors="replace").strip()


async def job_environment(
    source_script: str | None, conda_env: str | None, do_scripts_dir: str, timeout_s: float,
    user: JobUser | None = None,
) -> dict[str, Any]:
    """`pip freeze` inside the jobs' environment and `git describe` of the task scripts (cached per environment)."""
    key = (source_script, conda_env, do_scripts_dir, user.uid if user else None)
    cached = _cache.get(key)
    if cached and time.monotonic() - cached[0] < ENVIRONMENT_CACHE_S:
        return cached[1]
    prelude = []
    if source_script:
        home = source_script.startswith("~")
        path = '"$HOME"' + shlex.quote(source_script[1:]) if home else shlex.quote(source_script)
        prelude.append(f"source {path}")
    if conda_env:
        prelude.append(f"conda activate {shlex.quote(conda_env)}")
    python = "if command -v python >/dev/null; then python -m pip freeze; else python3 -m pip freeze; fi"
    code, output = await _run(" && ".join([*prelude, f"( {python} )"]), timeout_s, user)
    environment: dict[str, Any] = {
        "source_script": source_script,
        "conda_env": conda_env,
        "pip_freeze": output.splitlines() if code == 0 else None,
        "pip_freeze_error": None if code == 0 else output[-2000:],
        "do_scripts": str(do_scripts_dir),
        "do_scripts_git": await _git_describe(do_scripts_dir, timeout_s, user),
    }
    _cache[key] = (time.monotonic(), environment)
    return environment


def refused_environment(source_script: str | None, conda_env: str | None, do_scripts_dir: str) -> dict[str, Any]:
    """The software record of a run whose programs are no longer beneath the script roots: nothing was run."""
    reason = "not recorded: the workflow's programs are not beneath [services.scheduler] script_roots"
    return {
        "source_script": source_script, "conda_env": conda_env, "pip_freeze": None, "pip_freeze_error": reason,
        "do_scripts": do_scripts_dir, "do_scripts_git": None,
    }


async def _git_describe(directory: str, timeout_s: float, user: JobUser | None) -> str | None:
    if not await asyncio.to_thread(Path(directory).is_dir):
        return None
    # The scripts' owner (an administrator) is not the jobs' user: say this one checkout is trusted, or git
    # refuses it as "dubious ownership". Only this directory, and only for this command.
    safe = shlex.quote(f"safe.directory={directory}")
    command = f"git -c {safe} describe --always --dirty 2>/dev/null"
    code, output = await _run(command, timeout_s, user, cwd=directory)
    return output if code == 0 and output else None


def run_record(
    run_id: str, config_text: str, config_sha256: str, input_files: list[str], environment: dict[str, Any]
) -> dict[str, Any]:
    """The provenance taken when a run starts."""
    return {
        "run_id": run_id,
        "config_sha256": config_sha256,
        "config_text": config_text,
        "inputs": input_files,
        "software": environment,
    }


def with_attempts(
    record: dict[str, Any], attempts: list[dict[str, Any]], created_at: datetime, finished_at: datetime | None
) -> dict[str, Any]:
    """The provenance record completed with each attempt's host, times, state and log."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        jobs.setdefault(a["job_key"], []).append(
            {
                "attempt": a["attempt"],
                "state": a["state"],
                "host": a["host"],
                "exit_code": a["exit_code"],
                "submitted_at": _iso(a["submitted_at"]),
                "ended_at": _iso(a["ended_at"]),
                "log_path": a["log_path"],
            }
        )
    return {**record, "created_at": _iso(created_at), "finished_at": _iso(finished_at), "jobs": jobs}


def write_record(workdir: str, record: dict[str, Any]) -> None:
    """Keep the provenance next to the run's products as `provenance.json`."""
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "provenance.json.tmp"
    # The jobs' user can write in the work directory: never follow what it may have put at the temporary name.
    with os.fdopen(open_new(tmp), "w") as f:
        f.write(json.dumps(record, indent=1, default=str))
    tmp.replace(path / "provenance.json")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
