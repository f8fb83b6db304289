"""PBS/TORQUE backend: qsub to submit, one `qstat -f` per status batch, qdel to cancel.

The external id is `<pbs job id>:<log path>`. While the server keeps a job (keep_completed) its state
and exit_status come from qstat; afterwards from the wrapper's exit-status file next to the log.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence

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

_PENDING = {"Q", "H", "W", "T"}
_RUNNING = {"R", "E", "S"}
_FINISHED = {"C", "F", "X"}
_UNKNOWN_JOB = re.compile(r"unknown job id|job has finished", re.IGNORECASE)
# TORQUE's exit_status for a job killed by qdel (256 + SIGTERM) and for one past its walltime.
_EXIT_DELETED = 271
_EXIT_WALLTIME = -11


class PbsBackend:
    """Runs jobs with qsub on a PBS/TORQUE server."""

    name = "pbs"

    def __init__(self, command_timeout_s: float = COMMAND_TIMEOUT_S):
        self._timeout_s = command_timeout_s

    async def submit(self, spec: JobSpec) -> str:
        """Submit the job with qsub and return `<job id>:<log path>`."""
        files = write_wrapper(spec)
        result = await run_command([*qsub_options(spec, files), str(files.wrapper)], timeout_s=self._timeout_s)
        raise_for_submit(result)
        job_id = result.stdout.strip()
        if not job_id or not job_id[0].isdigit() or any(c.isspace() for c in job_id):
            raise BackendError(f"qsub answered {job_id!r} instead of a job id: {result.describe()}")
        log.info("pbs_job_submitted", key=spec.key, pbs_job_id=job_id, log_path=str(files.log))
        return batch_external_id(job_id, files)

    async def status(self, external_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of the jobs from one `qstat -f`, completed by the wrappers' exit-status files."""
        if not external_ids:
            return {}
        parsed = {eid: parse_batch_external_id(eid, self.name) for eid in external_ids}
        job_ids = sorted({job_id for job_id, _ in parsed.values()})
        result = await run_command(["qstat", "-f", *job_ids], timeout_s=self._timeout_s)
        other_errors = [line for line in result.stderr.splitlines() if line.strip() and not _UNKNOWN_JOB.search(line)]
        if result.returncode != 0 and other_errors:
            raise BackendError(f"cannot read job states from PBS: {result.describe()}")
        jobs = parse_qstat_full(result.stdout)
        statuses = {}
        for eid, (job_id, files) in parsed.items():
            attributes = jobs.get(job_id)
            if attributes is None:
                statuses[eid] = status_after_the_fact(files, f"PBS job {job_id}")
            else:
                statuses[eid] = status_from_qstat(attributes, files)
        return statuses

    async def cancel(self, external_id: str) -> None:
        """qdel the job; a job the server has already finished or forgotten is left alone."""
        job_id, files = parse_batch_external_id(external_id, self.name)
        mark_cancelled(files)
        result = await run_command(["qdel", job_id], timeout_s=self._timeout_s)
        if result.returncode != 0 and not _UNKNOWN_JOB.search(result.stderr):
            raise BackendError(f"cannot cancel PBS job {job_id}: {result.describe()}")
        log.info("pbs_job_cancelled", pbs_job_id=job_id)

    async def close(self) -> None:
        """Nothing to release: every call is a separate command."""


def qsub_options(spec: JobSpec, files: JobFiles) -> list[str]:
    """The qsub command line (without the script) for `spec`, resources written as hera_opm writes them."""
    if spec.ncpu < 1 or spec.mem_mb < 1:
        raise JobSubmitError(f"job {spec.key}: ncpu and mem_mb must be positive (got {spec.ncpu}, {spec.mem_mb})")
    resources = f"vmem={spec.mem_mb}M,mem={spec.mem_mb}M,nodes=1:ppn={spec.ncpu}"
    argv = ["qsub", "-N", job_name(spec.action), "-o", str(files.log), "-j", "oe", "-l", resources]
    if spec.timeout_s is not None:
        # A minute more than the wrapper's own timeout, so the wrapper reports TIMED_OUT with exit 124.
        total = math.ceil(spec.timeout_s) + 60
        argv += ["-l", f"walltime={total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"]
    if spec.queue:
        argv += ["-q", spec.queue]
    if spec.extra_batch_options:
        argv += shlex.split(spec.extra_batch_options)
    return argv


def job_name(action: str) -> str:
    """A PBS-safe job name: starts with a letter, at most 15 characters (TORQUE's historical limit)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", action)
    if not name or not name[0].isalpha():
        name = "j" + name
    return name[:15]


def parse_qstat_full(stdout: str) -> dict[str, dict[str, str]]:
    """`qstat -f` output as {job id: {attribute: value}} (wrapped continuation lines are ignored)."""
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in stdout.splitlines():
        if line.startswith("Job Id:"):
            current = jobs.setdefault(line.split(":", 1)[1].strip(), {})
        elif current is not None and " = " in line:
            key, value = line.split(" = ", 1)
            current[key.strip()] = value.strip()
    return jobs


def status_from_qstat(attributes: dict[str, str], files: JobFiles) -> JobStatus:
    """What a job's qstat attributes mean, preferring the wrapper's exit record for a finished job."""
    state = attributes.get("job_state", "?")
    host = attributes.get("exec_host", "").split("/")[0] or None
    if state in _PENDING:
        return JobStatus(JobState.PENDING, None, None, attributes.get("comment"))
    if state in _RUNNING:
        return JobStatus(JobState.RUNNING, None, host, None)
    if state not in _FINISHED:
        return JobStatus(JobState.RUNNING, None, host, f"unrecognised PBS job_state {state!r}")
    record = read_exit_record(files)
    if record is not None:
        return status_from_record(record, was_cancelled(files))
    exit_status = _int_or_none(attributes.get("exit_status"))
    if was_cancelled(files) or exit_status == _EXIT_DELETED:
        return JobStatus(JobState.CANCELLED, exit_status, host, "cancelled (qdel)")
    if exit_status == _EXIT_WALLTIME:
        return JobStatus(JobState.TIMED_OUT, exit_status, host, "PBS walltime exceeded")
    if exit_status == 0:
        return JobStatus(JobState.SUCCEEDED, 0, host, None)
    return JobStatus(JobState.FAILED, exit_status, host, f"PBS exit_status {exit_status}")


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
