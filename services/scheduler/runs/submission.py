"""Submitting one attempt of a job: record it, hand it to the backend, record the external id and job.started.

The order is what keeps a crash harmless: the attempt row ('submitting') commits BEFORE the backend sees
the job, and no transaction is held across `submit()` (the local backend waits there for room). A crash
between the backend accepting the job and its id being stored leaves a 'submitting' row, which the next
scheduler marks LOST and submits again: that window (milliseconds) is the only way a job can run twice.
Storing the id after the backend accepted the job is therefore retried (with backoff) for as long as the
scheduler runs: a database hiccup there must not turn into a 'submitting' row and a second run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import asyncpg
import structlog

from services.scheduler.backends import (
    BACKEND_NAMES,
    Backend,
    BackendError,
    JobSpec,
    JobSubmitError,
    make_backend,
)
from services.scheduler.runs import repository
from services.scheduler.runs.confinement import PathPolicy, PolicyRefusal
from services.scheduler.runs.domain import REFUSED
from services.scheduler.runs.events import job_failed, job_started
from services.scheduler.runs.job_tokens import JobTokens
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.outputs import outputs_path_for
from services.scheduler.workflow import WorkflowOptions, load_workflow
from shared.bus.backoff import Backoff
from shared.bus.outbox import append_events
from shared.errors import ConfigurationError
from shared.events import Event, Payload
from shared.failures import describe, is_transient

log = structlog.get_logger()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

MakeEvent = Callable[[Payload], Event]


class BackendPool:
    """Every backend, built once at start-up with its `[services.scheduler.backend_options]` (checked there)."""

    def __init__(self, options: SchedulerOptions, backends: Mapping[str, Backend] | None = None) -> None:
        unknown = sorted(set(options.backend_options) - set(BACKEND_NAMES))
        if unknown:
            raise ConfigurationError(
                f"[services.scheduler.backend_options] names unknown backend(s) {', '.join(unknown)}; "
                f"use one of {', '.join(BACKEND_NAMES)}"
            )
        self._backends: dict[str, Backend] = dict(backends) if backends is not None else {}
        for name in BACKEND_NAMES:
            if name not in self._backends:
                self._backends[name] = _build_backend(name, options.backend_options.get(name, {}))

    def get(self, name: str) -> Backend:
        """The backend called `name`."""
        try:
            return self._backends[name]
        except KeyError:
            raise ConfigurationError(
                f"no scheduler backend {name!r}: use one of {', '.join(sorted(self._backends))}"
            ) from None

    async def close(self) -> None:
        """Close every backend (their running jobs keep running)."""
        for backend in self._backends.values():
            await backend.close()


def _build_backend(name: str, options: Mapping[str, object]) -> Backend:
    try:
        return make_backend(name, **options)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(
            f"[services.scheduler.backend_options.{name}] is not valid ({e}); fix or remove that option "
            f"(given: {', '.join(sorted(options)) or 'none'})"
        ) from e


@functools.lru_cache(maxsize=64)
def workflow_options(config_text: str) -> WorkflowOptions:
    """The [Options] of a run's config (cached: every job of a run shares them)."""
    return load_workflow(config_text).options


def log_path_for(workdir: str, key: str, attempt: int) -> Path:
    """Where attempt `attempt` of job `key` logs: `<workdir>/logs/<key>.<attempt>.log`."""
    return Path(workdir) / "logs" / f"{_UNSAFE.sub('_', key)}.{attempt}.log"


def job_spec(job: asyncpg.Record, attempt: int, policy: PathPolicy, tokens: JobTokens | None = None) -> JobSpec:
    """The backend's JobSpec for one attempt of a job row (from repository.job_row), its programs and inputs
    checked again beneath their roots (PolicyRefusal): the filesystem may have changed since the run was planned.
    With `tokens`, the job gets an OBSFLOW_TOKEN of its own (see job_tokens)."""
    options = workflow_options(job["config_text"])
    files = json.loads(job["files"])
    programs = policy.programs(options, job["action"])
    policy.batch_options(job["backend"], job["action"], job["extra_batch_options"])
    policy.inputs(files, None)  # the planned paths (absolute, or bare names) must still be beneath input roots
    log_path = log_path_for(job["workdir"], job["job_key"], attempt)
    return JobSpec(
        key=job["job_key"],
        action=job["action"],
        args=json.loads(job["args"]),
        workdir=Path(job["workdir"]),
        log_path=log_path,
        ncpu=job["ncpu"],
        mem_mb=job["mem_mb"],
        queue=job["queue"],
        timeout_s=job["timeout_s"],
        extra_batch_options=job["extra_batch_options"],
        do_script=programs.do_script,
        source_script=programs.source_script,
        conda_env=programs.conda_env,
        env={
            "OBSFLOW_RUN_ID": job["run_id"],
            "OBSFLOW_JOB_ID": job["job_key"],
            "OBSFLOW_JOB_INPUTS": json.dumps(files),
            "OBSFLOW_ATTEMPT": str(attempt),
            "OBSFLOW_WORKFLOW": job["workflow_name"] or "",
            "OBSFLOW_OUTPUTS_FILE": str(outputs_path_for(log_path)),
            **({"OBSFLOW_TOKEN": tokens(job["run_id"], job["timeout_s"])} if tokens is not None else {}),
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
    pool: asyncpg.Pool, backends: BackendPool, make_event: MakeEvent, policy: PathPolicy, run_id: str, key: str,
    attempt: int, tokens: JobTokens | None = None,
) -> None:
    """Submit attempt `attempt` of a job, recording every step (see the module docstring for the order)."""
    job = await repository.job_row(pool, run_id, key)
    log_path = log_path_for(job["workdir"], key, attempt)
    async with pool.acquire() as conn:
        if not await repository.start_attempt(conn, run_id, key, attempt, job["backend"], str(log_path)):
            return  # another pass got there first
    try:
        spec = await asyncio.to_thread(job_spec, job, attempt, policy, tokens)
        await asyncio.to_thread(prepare_workdir, job["workdir"], json.loads(job["files"]))
        external_id = await backends.get(job["backend"]).submit(spec)
    except PolicyRefusal as e:
        log.error("job_refused_by_policy", run_id=run_id, job=key, attempt=attempt, reason=str(e))
        await _record_unsubmitted(pool, make_event, job, attempt, REFUSED, str(e))
        return
    except JobSubmitError as e:
        await _record_unsubmitted(pool, make_event, job, attempt, REFUSED, str(e))
        return
    except (BackendError, OSError) as e:
        await _record_unsubmitted(pool, make_event, job, attempt, "failed", f"could not submit: {e}")
        return
    except asyncio.CancelledError:
        # Stopping: nothing was started (or we cannot know); the next scheduler retries this attempt.
        await asyncio.shield(_mark_lost(pool, run_id, key, attempt))
        raise
    await _store_submitted(pool, make_event, job, attempt, external_id)
    log.info("job_submitted", run_id=run_id, job=key, attempt=attempt, backend=job["backend"], external_id=external_id)


async def record_submission_error(
    pool: asyncpg.Pool, make_event: MakeEvent, run_id: str, key: str, attempt: int, error: BaseException
) -> None:
    """An unexpected error (a bug, a bad backend option) ends the attempt as failed, naming the error."""
    reason = f"could not submit: {error.__class__.__name__}: {error}"
    log.error("job_submission_crashed", run_id=run_id, job=key, attempt=attempt, error=reason, exc_info=error)

    async def store() -> None:
        async with pool.acquire() as conn, conn.transaction():
            job = await repository.job_row(conn, run_id, key)
            log_path = str(log_path_for(job["workdir"], key, attempt))
            if not await repository.fail_submitting(conn, run_id, key, attempt, job["backend"], log_path, reason):
                return  # the attempt got further than 'submitting': it is the backend's now
            facts = (await repository.run_facts(conn, run_id))[key]
            event = job_failed(job, facts, attempt, "failed", reason, None, log_path)
            await append_events(conn, [make_event(event)])

    await retry_store(store, "submission_error", run_id=run_id, job=key, attempt=attempt)


async def retry_store(store: Callable[[], Awaitable[None]], what: str, **context: object) -> None:
    """Run the transaction `store` until it commits, with backoff; only cancellation (stopping) ends it."""
    backoff = Backoff(base_s=0.2, cap_s=10.0)
    while True:
        try:
            await store()
            return
        except Exception as e:  # classified: outages, and any database error besides (see below), are retried
            # The backend has the job, so giving up would lose its id: a database error that is not transient
            # (a statement cancelled, a lock timeout) is retried too, logged as an error for a person to see.
            if not (is_transient(e) or isinstance(e, asyncpg.PostgresError)):
                raise
            log.error("attempt_store_retry", what=what, error=describe(e), retry_in_s=round(backoff.peek(), 2),
                      **context)
            await backoff.wait()


async def _store_submitted(
    pool: asyncpg.Pool, make_event: MakeEvent, job: asyncpg.Record, attempt: int, external_id: str
) -> None:
    run_id, key = job["run_id"], job["job_key"]

    async def store() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await repository.mark_submitted(conn, run_id, key, attempt, external_id)
            await append_events(conn, [make_event(job_started(job, attempt, external_id))])

    try:
        await retry_store(store, "external_id", run_id=run_id, job=key, attempt=attempt, external_id=external_id)
    except asyncio.CancelledError:
        # The backend has the job but its id is not stored: the next scheduler will submit it again.
        log.error("external_id_not_stored", run_id=run_id, job=key, attempt=attempt, backend=job["backend"],
                  external_id=external_id, hint="cancel this job in the batch system: it will be submitted again")
        raise


async def _record_unsubmitted(
    pool: asyncpg.Pool, make_event: MakeEvent, job: asyncpg.Record, attempt: int, state: str, reason: str
) -> None:
    log.warning("job_not_submitted", run_id=job["run_id"], job=job["job_key"], attempt=attempt, reason=reason)
    log_path = str(log_path_for(job["workdir"], job["job_key"], attempt))

    async def store() -> None:
        async with pool.acquire() as conn, conn.transaction():
            ended = await repository.end_attempt(conn, job["run_id"], job["job_key"], attempt, state, detail=reason)
            if ended is None:
                return
            facts = (await repository.run_facts(conn, job["run_id"]))[job["job_key"]]
            event = job_failed(job, facts, attempt, state, reason, None, log_path)
            await append_events(conn, [make_event(event)])

    await retry_store(store, "not_submitted", run_id=job["run_id"], job=job["job_key"], attempt=attempt)


async def _mark_lost(pool: asyncpg.Pool, run_id: str, key: str, attempt: int) -> None:
    async with pool.acquire() as conn:
        await repository.end_attempt(
            conn, run_id, key, attempt, "lost", detail="the scheduler stopped while submitting; submitted again"
        )
