"""Slurm backend: sbatch to submit, one squeue per status batch, scancel to cancel.

The external id is `<slurm job id>:<log path>`. While slurmctld remembers a job (MinJobAge after it ends)
its state comes from squeue; afterwards (or after a controller restart that lost it) from the wrapper's
exit-status file next to the log. sacct is never needed, so no slurmdbd is required.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.scheduler.backends.base import BackendError, JobSpec, JobState, JobStatus, JobSubmitError
from services.scheduler.backends.commands import COMMAND_TIMEOUT_S, raise_for_submit, run_command
from services.scheduler.backends.wrapper import (
    JobFiles,
    batch_external_id,
    mark_cancelled,
    parse_batch_external_id,
    read_exit_record,
    status_after_the_fact,
    status_from_record,
    was_cancelled,
    write_wrapper,
)

log = structlog.get_logger()

_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"}
_TIMED_OUT = {"TIMEOUT", "DEADLINE"}
_SQUEUE_FORMAT = "JobID:|,State:|,exit_code:|,NodeList:|,Reason:|"
_FORGOTTEN_JOB = re.compile(r"invalid job id|already completing or completed", re.IGNORECASE)


@dataclass(frozen=True)
class SqueueRow:
    """One job as squeue shows it."""

    job_id: str
    state: str
    wait_status: int | None
    node: str | None
    reason: str | None


class SlurmBackend:
    """Runs jobs with sbatch on a Slurm cluster; `slurm_conf` sets SLURM_CONF for every command."""

    name = "slurm"

    def __init__(self, slurm_conf: str | Path | None = None, command_timeout_s: float = COMMAND_TIMEOUT_S):
        self._env = {"SLURM_CONF": str(slurm_conf)} if slurm_conf else None
        self._timeout_s = command_timeout_s

    async def submit(self, spec: JobSpec) -> str:
        """Submit the job with sbatch and return `<job id>:<log path>`."""
        files = write_wrapper(spec)
        argv = [*sbatch_options(spec, files), str(files.wrapper)]
        result = await run_command(argv, extra_env=self._env, timeout_s=self._timeout_s)
        raise_for_submit(result)
        job_id = result.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise BackendError(f"sbatch answered {result.stdout.strip()!r} instead of a job id: {result.describe()}")
        log.info("slurm_job_submitted", key=spec.key, slurm_job_id=job_id, log_path=str(files.log))
        return batch_external_id(job_id, files)

    async def status(self, external_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of the jobs from one squeue call, completed by the wrappers' exit-status files."""
        if not external_ids:
            return {}
        parsed = {eid: parse_batch_external_id(eid, self.name) for eid in external_ids}
        job_ids = sorted({job_id for job_id, _ in parsed.values()}, key=int)
        argv = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", f"--Format={_SQUEUE_FORMAT}"]
        result = await run_command(argv, extra_env=self._env, timeout_s=self._timeout_s)
        if result.returncode != 0 and not _FORGOTTEN_JOB.search(result.stderr):
            raise BackendError(f"cannot read job states from Slurm: {result.describe()}")
        rows = {row.job_id: row for row in parse_squeue(result.stdout)} if result.returncode == 0 else {}
        statuses = {}
        for eid, (job_id, files) in parsed.items():
            row = rows.get(job_id)
            if row is None:
                statuses[eid] = status_after_the_fact(files, f"Slurm job {job_id}")
            else:
                statuses[eid] = status_from_squeue(row, files)
        return statuses

    async def cancel(self, external_id: str) -> None:
        """scancel the job; a job Slurm has already finished or forgotten is left alone."""
        job_id, files = parse_batch_external_id(external_id, self.name)
        mark_cancelled(files)
        result = await run_command(["scancel", job_id], extra_env=self._env, timeout_s=self._timeout_s)
        if result.returncode != 0 and not _FORGOTTEN_JOB.search(result.stderr):
            raise BackendError(f"cannot cancel Slurm job {job_id}: {result.describe()}")
        log.info("slurm_job_cancelled", slurm_job_id=job_id)

    async def close(self) -> None:
        """Nothing to release: every call is a separate command."""


def sbatch_options(spec: JobSpec, files: JobFiles) -> list[str]:
    """The sbatch command line (without the script) for `spec`."""
    if spec.ncpu < 1 or spec.mem_mb < 1:
        raise JobSubmitError(f"job {spec.key}: ncpu and mem_mb must be positive (got {spec.ncpu}, {spec.mem_mb})")
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={job_name(spec.key)}",
        f"--output={files.log}",
        f"--chdir={spec.workdir.absolute()}",
        "--ntasks=1",
        f"--cpus-per-task={spec.ncpu}",
        f"--mem={spec.mem_mb}M",
    ]
    if spec.queue:
        argv.append(f"--partition={spec.queue}")
    if spec.timeout_s is not None:
        # One minute more than the wrapper's own timeout, so the wrapper reports TIMED_OUT with exit 124.
        argv.append(f"--time={math.ceil(spec.timeout_s / 60) + 1}")
    if spec.extra_batch_options:
        argv += shlex.split(spec.extra_batch_options)
    return argv


def job_name(key: str) -> str:
    """A Slurm-safe job name made from the job key."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", key)[:128] or "obsflow"


def parse_squeue(stdout: str) -> list[SqueueRow]:
    """Rows of `squeue --Format=JobID:|,State:|,exit_code:|,NodeList:|,Reason:|`."""
    rows = []
    for line in stdout.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 5 or not fields[0]:
            continue
        job_id, state, wait_status, node, reason = fields[:5]
        rows.append(
            SqueueRow(
                job_id=job_id,
                state=state.split()[0] if state else "UNKNOWN",
                wait_status=int(wait_status) if wait_status.isdigit() else None,
                node=node or None,
                reason=reason if reason and reason != "None" else None,
            )
        )
    return rows


def status_from_squeue(row: SqueueRow, files: JobFiles) -> JobStatus:
    """What a squeue row means, using the wrapper's exit record for the exit code of a finished job."""
    if row.state in _PENDING:
        return JobStatus(JobState.PENDING, None, None, row.reason)
    if row.state in _RUNNING:
        return JobStatus(JobState.RUNNING, None, row.node, None)
    if row.state == "CANCELLED":
        return JobStatus(JobState.CANCELLED, None, row.node, "cancelled (scancel)")
    if row.state in _TIMED_OUT:
        return JobStatus(JobState.TIMED_OUT, None, row.node, f"Slurm time limit reached ({row.state})")
    record = read_exit_record(files)
    if record is not None:
        return status_from_record(record, was_cancelled(files))
    exit_code = _exit_code(row.wait_status)
    if row.state == "COMPLETED":
        return JobStatus(JobState.SUCCEEDED, 0, row.node, None)
    return JobStatus(JobState.FAILED, exit_code, row.node, f"Slurm state {row.state}, reason {row.reason}")


def _exit_code(wait_status: int | None) -> int | None:
    if wait_status is None or wait_status & 0x7F:
        return None
    return wait_status >> 8
