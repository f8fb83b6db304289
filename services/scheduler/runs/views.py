"""What the API and CLI show of runs: summaries, and one run's jobs with derived states and last errors."""

from __future__ import annotations

import json
from collections import Counter

import asyncpg

from services.scheduler.runs import repository
from services.scheduler.runs.domain import job_statuses, run_outcome
from shared.api.scheduler import Attempt, Job, RunDetail, RunState, RunSummary


async def run_summaries(pool: asyncpg.Pool, limit: int = 100) -> list[RunSummary]:
    """The newest runs with their derived state and job counts by state."""
    rows = await pool.fetch(
        "SELECT run_id, workflow_name, backend, created_at, finished_at, jsonb_array_length(input_files) AS n_files"
        " FROM runs ORDER BY created_at DESC, run_id LIMIT $1",
        limit,
    )
    summaries = []
    for r in rows:
        statuses = job_statuses(await repository.run_facts(pool, r["run_id"]))
        outcome = run_outcome(statuses)
        summaries.append(RunSummary(
            run_id=r["run_id"], workflow=r["workflow_name"], backend=r["backend"],
            state=_run_state(outcome.finished, outcome.succeeded), files=r["n_files"],
            jobs=dict(Counter(s.value for s in statuses.values())), created_at=r["created_at"],
            finished_at=r["finished_at"],
        ))
    return summaries


def _run_state(finished: bool, succeeded: bool) -> RunState:
    if not finished:
        return "running"
    return "succeeded" if succeeded else "failed"


async def run_detail(pool: asyncpg.Pool, run_id: str) -> RunDetail | None:
    """One run: its jobs in plan order with derived states, attempts, last errors, and its provenance."""
    run = await pool.fetchrow("SELECT * FROM runs WHERE run_id = $1", run_id)
    if run is None:
        return None
    facts = await repository.run_facts(pool, run_id)
    statuses = job_statuses(facts)
    outcome = run_outcome(statuses)
    jobs = await pool.fetch(
        "SELECT job_key, action, primary_file, files, args, max_attempts FROM jobs WHERE run_id = $1 ORDER BY position",
        run_id,
    )
    attempts: dict[str, list[Attempt]] = {}
    for a in await pool.fetch(
        "SELECT job_key, attempt, state, exit_code, detail, host, log_path, submitted_at, ended_at FROM attempts"
        " WHERE run_id = $1 ORDER BY attempt",
        run_id,
    ):
        attempts.setdefault(a["job_key"], []).append(Attempt(**dict(a)))
    job_views = []
    for j in jobs:
        tried = attempts.get(j["job_key"], [])
        errors = [a for a in tried if a.state not in ("succeeded", "submitting", "submitted", "pending", "running")]
        job_views.append(Job(
            job_key=j["job_key"], action=j["action"], primary_file=j["primary_file"], files=json.loads(j["files"]),
            args=json.loads(j["args"]), state=statuses[j["job_key"]].value, attempts=tried,
            last_error=_error_text(errors[-1]) if errors else None,
        ))
    return RunDetail(
        run_id=run_id, workflow=run["workflow_name"], backend=run["backend"], workdir=run["workdir"],
        state=_run_state(outcome.finished and run["finished_at"] is not None, outcome.succeeded),
        created_at=run["created_at"], finished_at=run["finished_at"], input_files=json.loads(run["input_files"]),
        config_sha256=run["config_sha256"], jobs=job_views,
        provenance=json.loads(run["provenance"]) if run["provenance"] else None,
    )


def _error_text(attempt: Attempt) -> str:
    detail = attempt.detail or attempt.state
    return f"attempt {attempt.attempt}: {attempt.state}: {detail} (log {attempt.log_path})"
