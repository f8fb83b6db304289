"""The start and end of a run: its provenance record, and once every job has ended, cleanup and
workflow.finished (with finished_at) in one transaction.

Cleanup runs before the transaction that finishes the run: removing files is idempotent, so a crash in
between only means doing it again after the restart. That transaction locks the run's row and derives the
outcome again from the jobs: a retry request committed meanwhile (it takes the same lock) keeps the run open.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import structlog

from services.scheduler.runs import provenance, repository
from services.scheduler.runs.cleanup import remove_temporary_products
from services.scheduler.runs.domain import RunOutcome, job_statuses, run_outcome
from services.scheduler.runs.events import workflow_finished
from services.scheduler.runs.options import SchedulerOptions, workflow_extras
from services.scheduler.runs.submission import MakeEvent, workflow_options
from services.scheduler.workflow import WorkflowError
from shared.bus.outbox import append_events

log = structlog.get_logger()


class RunFinisher:
    """Records provenance when a run starts and closes the run when every job has ended."""

    def __init__(self, pool: asyncpg.Pool, options: SchedulerOptions, make_event: MakeEvent) -> None:
        self.pool = pool
        self.options = options
        self.make_event = make_event
        self._capturing: asyncio.Task[None] | None = None

    async def capture_provenance(self) -> None:
        """Start (in the background) recording the software environment of runs that have none yet."""
        if self._capturing is not None and not self._capturing.done():
            return
        runs = await repository.runs_without_provenance(self.pool)
        if runs:
            self._capturing = asyncio.create_task(self._capture(runs))

    async def _capture(self, runs: list[asyncpg.Record]) -> None:
        for run in runs:
            try:
                options = workflow_options(run["config_text"])
            except WorkflowError as e:
                log.error("provenance_unreadable_config", run_id=run["run_id"], error=str(e))
                continue
            programs = await asyncio.to_thread(self.options.path_policy.environment, options)
            if programs is None:  # moved out of the script roots since the run was planned: run nothing
                log.error("provenance_refused_by_policy", run_id=run["run_id"])
                environment = provenance.refused_environment(
                    options.source_script, options.conda_env, options.path_to_do_scripts
                )
            else:
                environment = await provenance.job_environment(
                    options.source_script, options.conda_env, str(programs.do_script),  # the scripts' directory
                    self.options.provenance_timeout_s, self.options.job_user,
                )
            record = provenance.run_record(
                run["run_id"], run["config_text"], run["config_sha256"], json.loads(run["input_files"]), environment
            )
            await repository.set_provenance(self.pool, run["run_id"], record)

    async def finish(self, run_id: str, outcome: RunOutcome) -> None:
        """Clean up after success, then set finished_at and emit workflow.finished (once)."""
        run = await self.pool.fetchrow(
            "SELECT workflow_name, workdir, config_text, provenance FROM runs WHERE run_id = $1", run_id
        )
        if run is None or run["provenance"] is None:
            return  # wait for the provenance record: a run is never closed without one
        removed: list[str] = []
        if outcome.succeeded:
            patterns = workflow_extras(run["config_text"]).cleanup
            removed = await asyncio.to_thread(
                remove_temporary_products, self.options.workdir_root, run["workdir"], patterns, self.options.store_roots
            )
        async with self.pool.acquire() as conn, conn.transaction():
            if not await repository.lock_open_run(conn, run_id):
                return  # another pass finished it
            if run_outcome(job_statuses(await repository.run_facts(conn, run_id))) != outcome:
                log.info("run_finish_deferred", run_id=run_id, reason="its jobs changed (a retry request)")
                return  # the next pass decides again (and cleans up again if it now succeeded)
            finished = await repository.finish_run(conn, run_id)
            if finished is None:
                return
            attempts = await conn.fetch(
                "SELECT job_key, attempt, state, host, exit_code, submitted_at, ended_at, log_path FROM attempts"
                " WHERE run_id = $1 ORDER BY job_key, attempt",
                run_id,
            )
            record = provenance.with_attempts(
                json.loads(run["provenance"]), [dict(a) for a in attempts], finished["created_at"],
                finished["finished_at"],
            )
            record["succeeded"] = outcome.succeeded
            earlier = set(record.get("removed_temporary_products", []))
            record["removed_temporary_products"] = sorted(earlier | set(removed))
            await repository.set_provenance(conn, run_id, record)
            await append_events(conn, [self.make_event(workflow_finished(run_id, run["workflow_name"], outcome))])
        await asyncio.to_thread(provenance.write_record, run["workdir"], record)
        log.info(
            "run_finished", run_id=run_id, succeeded=outcome.succeeded, jobs=outcome.jobs,
            failed=outcome.failed_jobs, blocked=outcome.blocked_jobs, removed=len(removed),
        )
