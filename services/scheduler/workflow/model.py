"""The plain values of a workflow: its options, its actions and the jobs a plan is made of."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

SETUP = "SETUP"
TEARDOWN = "TEARDOWN"

# A count option (chunk_size, stride_length, prereq_chunk_size): a number of files, or the whole night.
Count = int | Literal["all"]


@dataclass(frozen=True)
class WorkflowOptions:
    """The [Options] section, with hera_opm's defaults applied."""

    makeflow_type: str
    path_to_do_scripts: str
    base_mem: int
    base_cpu: int | None = None
    default_queue: str = "hera"
    source_script: str | None = None
    conda_env: str | None = None
    mail_user: str | None = None
    batch_system: str = "slurm"
    timeout: str | None = None
    mandc_report: bool = False


@dataclass(frozen=True)
class ActionSpec:
    """One action of [WorkFlow] actions with its section's settings resolved."""

    name: str
    args_template: tuple[str, ...]
    prereqs: tuple[str, ...] = ()
    chunk_size: Count | None = None
    stride_length: Count | None = None
    prereq_chunk_size: Count | None = None
    time_centered: bool = True
    collect_stragglers: bool = False
    queue: str = "hera"
    mem_mb: int = 0
    ncpu: int | None = None
    extra_batch_options: str | None = None

    @property
    def is_per_file(self) -> bool:
        """True for actions that run once per chunk of files (everything but SETUP and TEARDOWN)."""
        return self.name not in (SETUP, TEARDOWN)


@dataclass(frozen=True)
class WorkflowConfig:
    """A whole workflow configuration, with the raw text and its sha256 kept for provenance."""

    options: WorkflowOptions
    actions: tuple[ActionSpec, ...]
    source_text: str
    sha256: str
    source_path: str | None = None

    @property
    def per_file_actions(self) -> tuple[ActionSpec, ...]:
        """The actions that run on files, in workflow order."""
        return tuple(a for a in self.actions if a.is_per_file)

    def action(self, name: str) -> ActionSpec:
        """The action called `name`."""
        for spec in self.actions:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def has_setup(self) -> bool:
        """True when the workflow starts with SETUP."""
        return bool(self.actions) and self.actions[0].name == SETUP

    @property
    def has_teardown(self) -> bool:
        """True when the workflow ends with TEARDOWN."""
        return bool(self.actions) and self.actions[-1].name == TEARDOWN


JobKey = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """One job of a plan: an action on its primary file's chunk, with what it waits for."""

    action: str
    primary_file: str | None
    files: tuple[str, ...]
    args: tuple[str, ...]
    prereqs: tuple[JobKey, ...]
    queue: str
    mem_mb: int
    ncpu: int | None
    timeout: str | None
    extra_batch_options: str | None = None
    working_dir: str | None = field(default=None, compare=False)

    @property
    def key(self) -> JobKey:
        """The (action, primary_file) pair that names this job in prerequisites."""
        return (self.action, self.primary_file)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (prereqs as [action, primary_file] pairs)."""
        return {
            "action": self.action,
            "primary_file": self.primary_file,
            "files": list(self.files),
            "args": list(self.args),
            "prereqs": [[action, primary] for action, primary in self.prereqs],
            "queue": self.queue,
            "mem_mb": self.mem_mb,
            "ncpu": self.ncpu,
            "timeout": self.timeout,
            "extra_batch_options": self.extra_batch_options,
            "working_dir": self.working_dir,
        }

    def to_json(self) -> str:
        """This job as one JSON object."""
        return json.dumps(self.to_dict())
