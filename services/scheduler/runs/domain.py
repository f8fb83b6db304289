"""The pure rules of a run: job keys, job and run states derived from attempts, readiness and retries.

Nothing here touches the database or a batch system: the dispatcher loads facts (jobs and their attempts),
asks these functions what they mean, and writes the decisions back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from services.scheduler.workflow import PlannedJob, WorkflowConfigError

DEFAULT_MAX_ATTEMPTS = 3

# Attempt states: the first three are in flight; the rest are final (the backends' JobState values, and
# REFUSED for a job the backend would never accept as specified).
SUBMITTING = "submitting"
IN_FLIGHT = (SUBMITTING, "submitted", "pending", "running")
SUCCEEDED = "succeeded"
REFUSED = "refused"
LOST = "lost"
RETRYABLE = ("failed", "timed_out", LOST)
FINAL = (SUCCEEDED, REFUSED, "failed", "timed_out", "cancelled", LOST)


class JobStatus(StrEnum):
    """What a job is doing, derived from its attempts in the current retry round and its prerequisites."""

    WAITING = "waiting"  # prerequisites not all succeeded yet
    READY = "ready"  # may be submitted now
    RUNNING = "running"  # an attempt is in flight
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # no attempt left (or refused, or cancelled)
    BLOCKED = "blocked"  # a prerequisite failed, so this job will never run

    @property
    def is_final(self) -> bool:
        """True for states that no longer change without a retry request."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.BLOCKED)


@dataclass(frozen=True)
class AttemptFact:
    """One attempt as recorded: its number, state and whether it ever reached the backend."""

    attempt: int
    state: str
    external_id: str | None = None
    detail: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class JobFacts:
    """A job's plan-level facts and its attempts."""

    key: str
    prereqs: tuple[str, ...]
    max_attempts: int
    counts_from_attempt: int = 1
    attempts: tuple[AttemptFact, ...] = field(default=())

    @property
    def current_attempts(self) -> tuple[AttemptFact, ...]:
        """The attempts of the current retry round, oldest first."""
        return tuple(a for a in sorted(self.attempts, key=lambda a: a.attempt) if a.attempt >= self.counts_from_attempt)

    @property
    def next_attempt(self) -> int:
        """The number the next attempt gets (numbers never repeat across rounds)."""
        return max((a.attempt for a in self.attempts), default=0) + 1


def job_key(job: PlannedJob) -> str:
    """The stable name of a planned job inside its run: `ACTION` or `ACTION:<primary file name>`."""
    return job_key_of(job.action, job.primary_file)


def job_key_of(action: str, primary_file: str | None) -> str:
    """The key of the job `(action, primary_file)`, as prerequisites name it."""
    return action if primary_file is None else f"{action}:{os.path.basename(primary_file)}"


def counted_attempts(attempts: Sequence[AttemptFact]) -> int:
    """Attempts that use up the budget: one lost before it ever reached the backend does not count."""
    return sum(1 for a in attempts if not (a.state == LOST and a.external_id is None))


def own_status(job: JobFacts) -> JobStatus | None:
    """The state the job's own attempts decide, or None when it depends on its prerequisites."""
    attempts = job.current_attempts
    if not attempts:
        return None
    last = attempts[-1]
    if last.state in IN_FLIGHT:
        return JobStatus.RUNNING
    if last.state == SUCCEEDED:
        return JobStatus.SUCCEEDED
    if last.state in RETRYABLE and counted_attempts(attempts) < job.max_attempts:
        return None
    return JobStatus.FAILED


def will_retry(job: JobFacts, final_state: str, attempt: int) -> bool:
    """Whether an attempt that just ended in `final_state` will be followed by another one."""
    if final_state not in RETRYABLE:
        return False
    earlier = [a for a in job.current_attempts if a.attempt != attempt]
    return counted_attempts(earlier) + 1 < job.max_attempts


def job_statuses(jobs: Mapping[str, JobFacts]) -> dict[str, JobStatus]:
    """The derived status of every job of a run (prerequisites outside the run are ignored)."""
    result: dict[str, JobStatus] = {}

    def status_of(key: str, seen: frozenset[str]) -> JobStatus:
        if key in result:
            return result[key]
        job = jobs[key]
        decided = own_status(job)
        if decided is None:
            prereq_states = [status_of(p, seen | {key}) for p in job.prereqs if p in jobs and p not in seen]
            if any(s in (JobStatus.FAILED, JobStatus.BLOCKED) for s in prereq_states):
                decided = JobStatus.BLOCKED
            elif all(s == JobStatus.SUCCEEDED for s in prereq_states):
                decided = JobStatus.READY
            else:
                decided = JobStatus.WAITING
        result[key] = decided
        return decided

    for key in jobs:
        status_of(key, frozenset())
    return result


def ready_jobs(jobs: Mapping[str, JobFacts]) -> list[str]:
    """Keys of the jobs that may be submitted now, in plan order."""
    statuses = job_statuses(jobs)
    return [key for key in jobs if statuses[key] == JobStatus.READY]


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: whether it succeeded, and how many jobs failed or were blocked."""

    finished: bool
    succeeded: bool
    jobs: int
    failed_jobs: int
    blocked_jobs: int


def run_outcome(statuses: Mapping[str, JobStatus]) -> RunOutcome:
    """Whether every job has ended, and with what result."""
    values = list(statuses.values())
    failed = sum(1 for s in values if s == JobStatus.FAILED)
    blocked = sum(1 for s in values if s == JobStatus.BLOCKED)
    finished = all(s.is_final for s in values)
    return RunOutcome(finished, finished and failed == 0 and blocked == 0, len(values), failed, blocked)


def reset_round(jobs: Mapping[str, JobFacts], failed_only: bool) -> dict[str, int]:
    """For a retry request: the new `counts_from_attempt` of each job that starts a fresh round.

    `failed_only` restarts failed jobs (their blocked dependants then run by themselves); otherwise every job
    that has ended starts again. Jobs with an attempt in flight are left alone.
    """
    statuses = job_statuses(jobs)
    restart = (JobStatus.FAILED,) if failed_only else (JobStatus.FAILED, JobStatus.SUCCEEDED)
    return {key: jobs[key].next_attempt for key, status in statuses.items() if status in restart}


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def timeout_seconds(text: str | int | float | None) -> float | None:
    """A hera_opm `timeout` (as given to timeout(1): `90`, `30m`, `24h`, `1d`) in seconds; None for none."""
    if text is None or text == "":
        return None
    match = _DURATION.match(str(text))
    if not match:
        raise WorkflowConfigError(
            f"Options timeout {text!r} is not a duration timeout(1) understands: use a number with an optional "
            "unit s, m, h or d (e.g. '24h')"
        )
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise WorkflowConfigError(f"Options timeout {text!r} must be more than zero")
    return seconds
