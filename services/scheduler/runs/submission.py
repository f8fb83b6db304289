"""Submitting one attempt of a job: record it, hand it to the backend, record the external id and job.started.

The order is what keeps a crash harmless: the attempt row ('submitting') commits BEFORE the backend sees
the job, and no transaction is held across `submit()` (the local backend waits there for room). A crash
between the backend accepting the job and its id being stored leaves a 'submitting' row, which the next
scheduler marks LOST and submits again: that window (milliseconds) is the only way a job can run twice.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import asyncpg
import structlog

from services.scheduler.backends import Backend, BackendError, JobSpec, JobSubmitError, make_backend
from services.scheduler.runs import repository
from services.scheduler.runs.domain import REFUSED
from services.scheduler.runs.events import job_failed, job_started
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.workflow import WorkflowOptions, load_workflow
from shared.bus.outbox import append_events
from shared.events import Event, Payload

log = structlog.get_logger()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

MakeEvent = Callable[[Payload], Event]


class BackendPool:
    """One backend instance per name, built on first use with its `[services.scheduler.backend_options]`."""

    def __init__(self, options: SchedulerOptions) -> None:
        self._options = options
        self._backends: dict[str, Backend] = {}

    def get(self, name: str) -> Backend:
        """The backend called `name`."""
        if name not in self._backends:
            self._backends[name] = make_backend(name, **self._options.backend_options.get(name, {}))
        return self._backends[name]

    async def close(self) -> None:
        """Close every backend (their running jobs keep running)."""
        for backend in self._backends.values():
            await backend.close()


@functools.lru_cache(maxsize=64)
def workflow_options(config_text: str) -> WorkflowOptions:
    """The [Options] of a run's config (cached: every job of a run shares them)."""
    return load_workflow(config_text).options


def log_path_for(workdir: str, key: str, attempt: int) -> Path:
    """Where attempt `attempt` of job `key` logs: `<workdir>/logs/<key>.<attempt>.log`."""
    return Path(workdir) / "logs" / f"{_UNSAFE.sub('_', key)}.{attempt}.log"


def job_spec(job: asyncpg.Record, attempt: int) -> JobSpec:
    """The backend's JobSpec for one attempt of a job row (from repository.job_row)."""
    options = workflow_options(job["config_text"])
    files = json.loads(job["files"])
    return JobSpec(
        key=job["job_key"],
        action=job["action"],
        args=json.loads(job["args"]),
        workdir=Path(job["workdir"]),
        log_path=log_path_for(job["workdir"], job["job_key"], attempt),
        ncpu=job["ncpu"],
        mem_mb=job["mem_mb"],
        queue=job["queue"],
        timeout_s=job["timeout_s"],
        extra_batch_options=job["extra_batch_options"],
        do_script=Path(options.path_to_do_scripts) / f"do_{job['action']}.sh",
        source_script=options.source_script,
        conda_env=options.conda_env,
        env={
            "OBSFLOW_RUN_ID": job["run_id"],
            "OBSFLOW_JOB_ID": job["job_key"],
            "OBSFLOW_JOB_INPUTS": json.dumps(files),
            "OBSFLOW_ATTEMPT": str(attempt),
            "OBSFLOW_WORKFLOW": job["workflow_name"] or "",
        },
    )


def prepare_workdir(workdir: str, input_files: list[str]) -> None:
    """Create the run's work directory and link each existing input file into it under its own name.

    Task scripts run there, so `{basename}` arguments find their files and products stay with the run.
    """
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    for source in input_files:
        link = path / os.path.basename(source)
        if os.path.isabs(source) and os.path.exists(source) and not link.exists() and not link.is_symlink():
            link.symlink_to(source)


async def submit_attempt(
    pool: asyncpg.Pool, backends: BackendPool, make_event: MakeEvent, run_id: str, key: str, attempt: int
) -> None:
    """Submit attempt `attempt` of a job, recording every step (see the module docstring for the order)."""
    job = await repository.job_row(pool, run_id, key)
    spec = job_spec(job, attempt)
    async with pool.acquire() as conn:
        if not await repository.start_attempt(conn, run_id, key, attempt, job["backend"], str(spec.log_path)):
            return  # another pass got there first
    try:
        await asyncio.to_thread(prepare_workdir, job["workdir"], json.loads(job["files"]))
        external_id = await backends.get(job["backend"]).submit(spec)
    except JobSubmitError as e:
        await _record_unsubmitted(pool, make_event, job, attempt, REFUSED, str(e), spec)
        return
    except (BackendError, OSError) as e:
        await _record_unsubmitted(pool, make_event, job, attempt, "failed", f"could not submit: {e}", spec)
        return
    except asyncio.CancelledError:
        # Stopping: nothing was started (or we cannot know); the next scheduler retries this attempt.
        await asyncio.shield(_mark_lost(pool, run_id, key, attempt))
        raise
    async with pool.acquire() as conn, conn.transaction():
        await repository.mark_submitted(conn, run_id, key, attempt, external_id)
        await append_events(conn, [make_event(job_started(job, attempt, external_id))])
    log.info("job_submitted", run_id=run_id, job=key, attempt=attempt, backend=job["backend"], external_id=external_id)


async def _record_unsubmitted(
    pool: asyncpg.Pool, make_event: MakeEvent, job: asyncpg.Record, attempt: int, state: str, reason: str, spec: JobSpec
) -> None:
    log.warning("job_not_submitted", run_id=job["run_id"], job=job["job_key"], attempt=attempt, reason=reason)
    async with pool.acquire() as conn, conn.transaction():
        ended = await repository.end_attempt(conn, job["run_id"], job["job_key"], attempt, state, detail=reason)
        if ended is None:
            return
        facts = (await repository.run_facts(conn, job["run_id"]))[job["job_key"]]
        event = job_failed(job, facts, attempt, state, reason, None, str(spec.log_path))
        await append_events(conn, [make_event(event)])


async def _mark_lost(pool: asyncpg.Pool, run_id: str, key: str, attempt: int) -> None:
    async with pool.acquire() as conn:
        await repository.end_attempt(
            conn, run_id, key, attempt, "lost", detail="the scheduler stopped while submitting; submitted again"
        )

