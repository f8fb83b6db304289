"""Turning a workflow config and a list of files into the rows of a new run (no database; the filesystem is
only looked at to check that every program and input lies beneath its roots: `confinement.py`)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.scheduler.runs.domain import job_key, job_key_of, timeout_seconds
from services.scheduler.runs.options import SchedulerOptions, workflow_extras
from services.scheduler.workflow import WorkflowConfig, WorkflowConfigError, load_workflow, plan_workflow

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class NewJob:
    """One job row of a new run."""

    key: str
    position: int
    action: str
    primary_file: str | None
    files: list[str]
    args: list[str]
    prereqs: list[str]
    queue: str | None
    mem_mb: int
    ncpu: int
    timeout_s: float | None
    extra_batch_options: str | None
    max_attempts: int


@dataclass(frozen=True)
class NewRun:
    """A planned run, ready to insert: its id, config, inputs, work directory and jobs."""

    run_id: str
    workflow_name: str | None
    config_text: str
    config_sha256: str
    backend: str
    input_files: list[str]
    workdir: str
    jobs: list[NewJob]


def new_run_id(workflow_name: str | None, now: datetime | None = None) -> str:
    """A unique, path-safe run id that sorts by creation time: `<workflow>-<UTC time>-<random>`."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    prefix = _UNSAFE.sub("_", workflow_name or "adhoc")[:40]
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:8]}"


def config_from_text(config_text: str) -> WorkflowConfig:
    """Read a workflow from its TOML text (never from a path: API callers must not make us read files)."""
    if "[" not in config_text:
        raise WorkflowConfigError(
            "config_text must be the TOML text of a hera_opm workflow (with an [Options] section), not a file name"
        )
    return load_workflow(config_text)


def check_workflow(config_text: str, options: SchedulerOptions, backend: str) -> WorkflowConfig:
    """The config, refused (WorkflowConfigError, PolicyRefusal) if it cannot work or names what it may not."""
    config = config_from_text(config_text)
    extras = workflow_extras(config.source_text)
    options.path_policy.check_config(config, backend, extras.input_dir)
    return config


def plan_run(
    config_text: str, files: list[str], options: SchedulerOptions, *, workflow_name: str | None, backend: str
) -> NewRun:
    """Plan the workflow over `files` (bare names resolved in `obsflow_input_dir` when the config sets it)."""
    config = check_workflow(config_text, options, backend)
    extras = workflow_extras(config_text)
    files = options.path_policy.inputs(files, extras.input_dir)
    planned = plan_workflow(config, files)
    max_attempts = extras.max_attempts or options.max_attempts
    run_id = new_run_id(workflow_name)
    jobs = [
        NewJob(
            key=job_key(job),
            position=position,
            action=job.action,
            primary_file=job.primary_file,
            files=list(job.files),
            args=list(job.args),
            prereqs=[job_key_of(action, primary) for action, primary in job.prereqs],
            queue=job.queue,
            mem_mb=job.mem_mb,
            ncpu=job.ncpu or 1,
            timeout_s=timeout_seconds(job.timeout),
            extra_batch_options=job.extra_batch_options,
            max_attempts=max_attempts,
        )
        for position, job in enumerate(planned)
    ]
    return NewRun(
        run_id=run_id,
        workflow_name=workflow_name,
        config_text=config.source_text,
        config_sha256=config.sha256,
        backend=backend,
        input_files=[str(f) for f in files],
        workdir=str(Path(options.workdir_root) / run_id),
        jobs=jobs,
    )

