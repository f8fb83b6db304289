"""The scheduler's SQL: workflows, runs, jobs and attempts (the facts every status is derived from)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from services.scheduler.runs.domain import IN_FLIGHT, SUBMITTING, AttemptFact, JobFacts
from services.scheduler.runs.planning import NewRun


@dataclass(frozen=True)
class InFlight:
    """An attempt the backend has accepted and that has not ended yet."""

    run_id: str
    job_key: str
    attempt: int
    backend: str
    external_id: str
    log_path: str


async def register_workflow(
    conn: asyncpg.Connection, name: str, config_text: str, sha256: str, trigger: str, match: object, backend: str
) -> None:
    """Register or replace the workflow `name` (runs already made keep their own copy of the config)."""
    await conn.execute(
        "INSERT INTO workflows (name, config_text, config_sha256, trigger, match, backend) VALUES ($1,$2,$3,$4,$5,$6)"
        " ON CONFLICT (name) DO UPDATE SET config_text = EXCLUDED.config_text, config_sha256 = EXCLUDED.config_sha256,"
        " trigger = EXCLUDED.trigger, match = EXCLUDED.match, backend = EXCLUDED.backend, registered_at = now()",
        name, config_text, sha256, trigger, None if match is None else json.dumps(match), backend,
    )


async def list_workflows(conn: asyncpg.Connection | asyncpg.Pool, trigger: str | None = None) -> list[dict[str, Any]]:
    """Registered workflows (all, or those started by `trigger`), by name."""
    rows = await conn.fetch(
        "SELECT name, config_text, config_sha256, trigger, match, backend, registered_at FROM workflows"
        " WHERE $1::text IS NULL OR trigger = $1 ORDER BY name",
        trigger,
    )
    return [{**dict(r), "match": None if r["match"] is None else json.loads(r["match"])} for r in rows]


async def insert_run(conn: asyncpg.Connection, run: NewRun, trigger_event_id: UUID | None) -> bool:
    """Insert a run and its jobs; False (and nothing written) if this trigger already started this workflow."""
    inserted = await conn.fetchval(
        "INSERT INTO runs (run_id, workflow_name, trigger_event_id, config_text, config_sha256, backend,"
        " input_files, workdir) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
        " ON CONFLICT (workflow_name, trigger_event_id) DO NOTHING RETURNING run_id",
        run.run_id, run.workflow_name, trigger_event_id, run.config_text, run.config_sha256, run.backend,
        json.dumps(run.input_files), run.workdir,
    )
    if inserted is None:
        return False
    await conn.executemany(
        "INSERT INTO jobs (run_id, job_key, position, action, primary_file, files, args, prereqs, queue, mem_mb,"
        " ncpu, timeout_s, extra_batch_options, max_attempts) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
        [
            (run.run_id, j.key, j.position, j.action, j.primary_file, json.dumps(j.files), json.dumps(j.args),
             json.dumps(j.prereqs), j.queue, j.mem_mb, j.ncpu, j.timeout_s, j.extra_batch_options, j.max_attempts)
            for j in run.jobs
        ],
    )
    return True


async def open_runs(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, dict[str, JobFacts]]:
    """The jobs (with attempts) of every run that has not finished, keyed by run id then job key."""
    job_rows = await conn.fetch(
        "SELECT j.run_id, j.job_key, j.prereqs, j.max_attempts, j.counts_from_attempt FROM jobs j"
        " JOIN runs r USING (run_id) WHERE r.finished_at IS NULL ORDER BY j.run_id, j.position"
    )
    attempt_rows = await conn.fetch(
        "SELECT a.run_id, a.job_key, a.attempt, a.state, a.external_id, a.detail, a.exit_code FROM attempts a"
        " JOIN runs r USING (run_id) WHERE r.finished_at IS NULL"
    )
    return _facts(job_rows, attempt_rows)


async def run_facts(conn: asyncpg.Connection | asyncpg.Pool, run_id: str) -> dict[str, JobFacts]:
    """The jobs of one run with their attempts, in plan order."""
    job_rows = await conn.fetch(
        "SELECT run_id, job_key, prereqs, max_attempts, counts_from_attempt FROM jobs WHERE run_id = $1"
        " ORDER BY position",
        run_id,
    )
    attempt_rows = await conn.fetch(
        "SELECT run_id, job_key, attempt, state, external_id, detail, exit_code FROM attempts WHERE run_id = $1",
        run_id,
    )
    return _facts(job_rows, attempt_rows).get(run_id, {})


def _facts(
    job_rows: Sequence[asyncpg.Record], attempt_rows: Sequence[asyncpg.Record]
) -> dict[str, dict[str, JobFacts]]:
    attempts: dict[tuple[str, str], list[AttemptFact]] = {}
    for a in attempt_rows:
        fact = AttemptFact(a["attempt"], a["state"], a["external_id"], a["detail"], a["exit_code"])
        attempts.setdefault((a["run_id"], a["job_key"]), []).append(fact)
    runs: dict[str, dict[str, JobFacts]] = {}
    for j in job_rows:
        runs.setdefault(j["run_id"], {})[j["job_key"]] = JobFacts(
            key=j["job_key"],
            prereqs=tuple(json.loads(j["prereqs"])),
            max_attempts=j["max_attempts"],
            counts_from_attempt=j["counts_from_attempt"],
            attempts=tuple(attempts.get((j["run_id"], j["job_key"]), ())),
        )
    return runs


async def job_row(conn: asyncpg.Connection | asyncpg.Pool, run_id: str, key: str) -> asyncpg.Record:
    """One job with its run's backend, work directory and config (what a submission needs)."""
    return await conn.fetchrow(
        "SELECT j.*, r.backend, r.workdir, r.config_text, r.workflow_name FROM jobs j JOIN runs r USING (run_id)"
        " WHERE j.run_id = $1 AND j.job_key = $2",
        run_id, key,
    )


async def start_attempt(
    conn: asyncpg.Connection, run_id: str, key: str, attempt: int, backend: str, log_path: str
) -> bool:
    """Record that attempt `attempt` is being submitted; False if that number is already taken."""
    inserted = await conn.fetchval(
        "INSERT INTO attempts (run_id, job_key, attempt, backend, state, log_path) VALUES ($1,$2,$3,$4,$5,$6)"
        " ON CONFLICT DO NOTHING RETURNING attempt",
        run_id, key, attempt, backend, SUBMITTING, log_path,
    )
    return inserted is not None


async def mark_submitted(conn: asyncpg.Connection, run_id: str, key: str, attempt: int, external_id: str) -> None:
    """The backend accepted the attempt: keep its external id."""
    await conn.execute(
        "UPDATE attempts SET external_id = $4, state = 'submitted', submitted_at = now()"
        " WHERE run_id = $1 AND job_key = $2 AND attempt = $3",
        run_id, key, attempt, external_id,
    )


async def fail_submitting(
    conn: asyncpg.Connection, run_id: str, key: str, attempt: int, backend: str, log_path: str, detail: str
) -> bool:
    """Record attempt `attempt` failed while being submitted (inserted if it had no row yet); False if it had
    already got further than 'submitting' (the backend has it) or ended."""
    failed = await conn.fetchval(
        "INSERT INTO attempts AS a (run_id, job_key, attempt, backend, state, log_path, detail, ended_at)"
        " VALUES ($1,$2,$3,$4,'failed',$5,$6,now())"
        " ON CONFLICT (run_id, job_key, attempt) DO UPDATE SET state = 'failed', detail = EXCLUDED.detail,"
        " ended_at = now() WHERE a.state = $7 RETURNING attempt",
        run_id, key, attempt, backend, log_path, detail, SUBMITTING,
    )
    return failed is not None


async def end_attempt(
    conn: asyncpg.Connection, run_id: str, key: str, attempt: int, state: str,
    exit_code: int | None = None, host: str | None = None, detail: str | None = None,
) -> asyncpg.Record | None:
    """Record how an in-flight attempt ended; None if it had already ended (a second poller, a replay)."""
    return await conn.fetchrow(
        "UPDATE attempts SET state = $4, exit_code = $5, host = COALESCE($6, host), detail = $7, ended_at = now()"
        " WHERE run_id = $1 AND job_key = $2 AND attempt = $3 AND state = ANY($8::text[])"
        " RETURNING submitted_at, ended_at, log_path",
        run_id, key, attempt, state, exit_code, host, detail, list(IN_FLIGHT),
    )


async def mark_running(
    conn: asyncpg.Connection | asyncpg.Pool, refs: Sequence[tuple[str, str, int, str | None]]
) -> None:
    """Note the attempts the backend reports running (and where), for status pages."""
    await conn.executemany(
        "UPDATE attempts SET state = 'running', host = COALESCE($4, host) WHERE run_id = $1 AND job_key = $2"
        " AND attempt = $3 AND state IN ('submitted', 'pending')",
        refs,
    )


async def in_flight(conn: asyncpg.Connection | asyncpg.Pool) -> list[InFlight]:
    """Attempts the backends have accepted and not finished."""
    rows = await conn.fetch(
        "SELECT run_id, job_key, attempt, backend, external_id, log_path FROM attempts"
        " WHERE state IN ('submitted', 'pending', 'running') AND external_id IS NOT NULL"
    )
    return [InFlight(**dict(r)) for r in rows]


async def abandon_submitting(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    """Attempts a crashed scheduler left half-submitted become LOST (they are retried)."""
    return await conn.fetch(
        "UPDATE attempts SET state = 'lost', ended_at = now(), detail = 'the scheduler stopped while submitting"
        " this attempt; it is submitted again' WHERE state = 'submitting' RETURNING run_id, job_key, attempt, log_path"
    )


async def lock_open_run(conn: asyncpg.Connection, run_id: str) -> bool:
    """Lock the run's row until the transaction ends (a retry request waits); False if it has finished."""
    locked = await conn.fetchval(
        "SELECT run_id FROM runs WHERE run_id = $1 AND finished_at IS NULL FOR UPDATE", run_id
    )
    return locked is not None


async def finish_run(conn: asyncpg.Connection, run_id: str) -> asyncpg.Record | None:
    """Set finished_at once; None if another pass already finished the run."""
    return await conn.fetchrow(
        "UPDATE runs SET finished_at = now() WHERE run_id = $1 AND finished_at IS NULL"
        " RETURNING run_id, workflow_name, workdir, config_text, created_at, finished_at",
        run_id,
    )


async def set_provenance(conn: asyncpg.Connection | asyncpg.Pool, run_id: str, provenance: dict[str, Any]) -> None:
    """Store the run's provenance record."""
    await conn.execute("UPDATE runs SET provenance = $2 WHERE run_id = $1", run_id, json.dumps(provenance))


async def runs_without_provenance(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    """Open runs whose software environment has not been recorded yet."""
    return await conn.fetch(
        "SELECT run_id, config_text, config_sha256, input_files, workdir, created_at FROM runs"
        " WHERE provenance IS NULL AND finished_at IS NULL ORDER BY created_at"
    )


async def reopen_run(conn: asyncpg.Connection, run_id: str, rounds: dict[str, int]) -> None:
    """Start a retry round for the given jobs and mark the run unfinished again."""
    await conn.executemany(
        "UPDATE jobs SET counts_from_attempt = $3 WHERE run_id = $1 AND job_key = $2",
        [(run_id, key, start) for key, start in rounds.items()],
    )
    if rounds:
        await conn.execute("UPDATE runs SET finished_at = NULL WHERE run_id = $1", run_id)
