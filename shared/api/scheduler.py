"""The scheduler API's answers: registered workflows, runs, their jobs and attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shared.api.base import ApiModel

Trigger = Literal["file.minted", "session.closed", "manual"]
RunState = Literal["running", "succeeded", "failed"]
JobState = Literal["waiting", "ready", "running", "succeeded", "failed", "blocked"]


class WorkflowRegistered(ApiModel):
    """A workflow registered (or replaced) and what starts it."""

    name: str
    trigger: Trigger
    backend: str
    config_sha256: str


class Workflow(WorkflowRegistered):
    """A registered workflow: its config as given, and for file.minted workflows which files start a run."""

    config_text: str
    match: dict[str, Any] | None = None
    registered_at: datetime


class WorkflowList(ApiModel):
    """The registered workflows, by name."""

    workflows: list[Workflow]


class RunStarted(ApiModel):
    """A run planned and queued."""

    run_id: str
    jobs: int = Field(description="how many jobs the plan has")
    workdir: str


class RunSummary(ApiModel):
    """A run with its state and how many of its jobs are in each state."""

    run_id: str
    workflow: str | None = Field(description="the registered workflow; null for an ad-hoc config")
    backend: str
    state: RunState
    files: int
    jobs: dict[str, int] = Field(description="count of jobs by state")
    created_at: datetime
    finished_at: datetime | None = None


class RunList(ApiModel):
    """Runs, newest first."""

    runs: list[RunSummary]


class Attempt(ApiModel):
    """One attempt at a job: where and when it ran and how it ended."""

    job_key: str
    attempt: int
    state: str
    exit_code: int | None = None
    detail: str | None = None
    host: str | None = None
    log_path: str
    submitted_at: datetime | None = None
    ended_at: datetime | None = None


class Job(ApiModel):
    """One job of a run: its action, files and arguments, its state and attempts, and its last error."""

    job_key: str
    action: str
    primary_file: str | None = None
    files: list[str]
    args: list[str]
    state: JobState
    attempts: list[Attempt]
    last_error: str | None = None


class RunDetail(ApiModel):
    """One run: its jobs in plan order, and its provenance (config, inputs, software, each attempt's host)."""

    run_id: str
    workflow: str | None
    backend: str
    workdir: str
    state: RunState
    created_at: datetime
    finished_at: datetime | None = None
    input_files: list[str]
    config_sha256: str
    jobs: list[Job]
    provenance: dict[str, Any] | None = Field(
        description="recorded when the run starts (config, inputs, software) and completed when it ends (attempts)")

    @property
    def finished(self) -> bool:
        """True once every job has ended and the run is closed."""
        return self.state != "running"


class RunRetried(ApiModel):
    """A retry: the jobs that will run again."""

    run_id: str
    restarted_jobs: list[str]


SCHEDULER_MODELS: tuple[type[ApiModel], ...] = (
    WorkflowRegistered, Workflow, WorkflowList, RunStarted, RunSummary, RunList, Attempt, Job, RunDetail, RunRetried,
)
