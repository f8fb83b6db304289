"""The execution-backend port: what a job is, what state it is in, and the four calls every backend serves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from shared.errors import PermanentError, TransientError


class BackendError(TransientError):
    """A batch system or process pool failed for now (controller down, command timed out): retry later."""


class JobSubmitError(PermanentError):
    """The backend refused this job as specified (bad queue, too many CPUs): resubmitting unchanged won't help."""


class ExternalIdError(PermanentError):
    """An external job id that this backend did not produce (or that was truncated when it was stored)."""


@dataclass(frozen=True)
class JobSpec:
    """One job to run: `do_script` with `args`, inside `source_script` / `conda_env`, logging to `log_path`."""

    key: str
    action: str
    args: list[str]
    workdir: Path
    log_path: Path
    ncpu: int
    mem_mb: int
    queue: str | None
    timeout_s: float | None
    extra_batch_options: str | None
    do_script: Path
    source_script: str | None
    conda_env: str | None
    env: Mapping[str, str] = field(default_factory=dict)


class JobState(StrEnum):
    """Where a job is; SUCCEEDED, FAILED, TIMED_OUT, CANCELLED and LOST are final."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        """True once the job will never change state again."""
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobStatus:
    """What a backend knows about one job: its state, exit code and host when known, and why."""

    state: JobState
    exit_code: int | None = None
    host: str | None = None
    detail: str | None = None


class Backend(Protocol):
    """Runs jobs somewhere; every id it returns can be queried by a fresh instance after a crash."""

    name: str

    async def submit(self, spec: JobSpec) -> str:
        """Start (or queue) the job and return its external id, which the caller persists."""
        ...

    async def status(self, external_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of each id, with at most one query of the batch system per call."""
        ...

    async def cancel(self, external_id: str) -> None:
        """Stop the job; a job that has already finished is left as it is."""
        ...

    async def close(self) -> None:
        """Release what the backend holds; running jobs keep running."""
        ...
