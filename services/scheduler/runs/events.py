"""The payloads the scheduler emits for a job row and its attempts (pure: values in, payloads out)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.scheduler.runs.domain import JobFacts, RunOutcome, will_retry
from shared.events.types import JobDone, JobFailed, JobStarted, WorkflowFinished


def _files(job: Mapping[str, Any]) -> list[str]:
    files = job["files"]
    return json.loads(files) if isinstance(files, str) else list(files)


def job_started(job: Mapping[str, Any], attempt: int, external_id: str) -> JobStarted:
    """job.started for an attempt the backend accepted."""
    return JobStarted(
        run_id=job["run_id"], job_id=job["job_key"], action=job["action"], files=_files(job), attempt=attempt,
        backend=job["backend"], external_id=external_id,
    )


def job_done(
    job: Mapping[str, Any], submitted_at: datetime | None, ended_at: datetime, log_path: str | None,
    outputs: list[str] | None = None,
) -> JobDone:
    """job.done for an attempt that succeeded, with the outputs it declared."""
    duration = (ended_at - submitted_at).total_seconds() if submitted_at else 0.0
    return JobDone(
        run_id=job["run_id"], job_id=job["job_key"], action=job["action"], files=_files(job), exit_status=0,
        duration_s=max(0.0, duration), log_path=log_path, outputs=list(outputs or []),
    )


def job_failed(
    job: Mapping[str, Any], facts: JobFacts, attempt: int, state: str, reason: str, exit_code: int | None,
    log_path: str | None,
) -> JobFailed:
    """job.failed for an attempt that ended badly; `will_retry` says whether another attempt follows."""
    return JobFailed(
        run_id=job["run_id"], job_id=job["job_key"], action=job["action"], files=_files(job), attempt=attempt,
        reason=reason, will_retry=will_retry(facts, state, attempt), exit_status=exit_code, log_path=log_path,
    )


def workflow_finished(run_id: str, workflow: str | None, outcome: RunOutcome) -> WorkflowFinished:
    """workflow.finished once every job of the run has ended."""
    return WorkflowFinished(
        run_id=run_id, workflow=workflow or "adhoc", succeeded=outcome.succeeded, jobs=outcome.jobs,
        failed_jobs=outcome.failed_jobs,
    )
