"""The scheduler's settings (`[services.scheduler]`) and the obsflow keys a workflow's [Options] may carry.

hera_opm ignores [Options] keys it does not know, so obsflow's own keys (`obsflow_cleanup`,
`obsflow_max_attempts`, `obsflow_input_dir`) keep a config usable by hera_opm unchanged.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.scheduler.backends import BACKEND_NAMES
from services.scheduler.backends.identity import JobUser, job_user, writable_by_others
from services.scheduler.runs.confinement import PathPolicy
from services.scheduler.runs.domain import DEFAULT_MAX_ATTEMPTS
from services.scheduler.workflow import WorkflowConfigError
from shared.errors import ConfigurationError
from shared.settings import Settings


@dataclass(frozen=True)
class SchedulerOptions:
    """How the scheduler runs jobs: default backend, each backend's options, retries, polling, workdirs."""

    workdir_root: Path
    store_roots: tuple[Path, ...] = ()
    backend: str = "local"
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    poll_interval_s: float = 0.5
    provenance_timeout_s: float = 60.0
    script_roots: tuple[Path, ...] = ()  # where programs may come from: none means nothing runs
    input_roots: tuple[Path, ...] = ()  # where inputs may come from, besides the store roots
    allow_adhoc_configs: bool = False  # may non-admin accounts start runs of config_text they send?
    job_user: JobUser | None = None  # whom local jobs and provenance commands run as (None: the service's user)

    @property
    def path_policy(self) -> PathPolicy:
        """Where the programs and inputs a workflow config names may lie."""
        return PathPolicy(self.script_roots, (*self.store_roots, *self.input_roots))

    @classmethod
    def from_settings(cls, settings: Settings) -> SchedulerOptions:
        """Read `[services.scheduler]` and check its roots against each other and the stores (see check_roots)."""
        raw = settings.service_options("scheduler")
        backend = str(raw.get("backend", "local"))
        if backend not in BACKEND_NAMES:
            raise ConfigurationError(
                f"services.scheduler.backend = {backend!r} is not a backend; choose one of {', '.join(BACKEND_NAMES)}"
            )
        try:
            backend_options = {str(k): dict(v) for k, v in dict(raw.get("backend_options", {})).items()}
            allow_adhoc = raw.get("allow_adhoc_configs", False)
            if not isinstance(allow_adhoc, bool):
                raise ValueError(f"allow_adhoc_configs must be true or false, got {allow_adhoc!r}")
            options = cls(
                workdir_root=Path(settings.data_dir).absolute() / "scheduler",
                store_roots=tuple(Path(store.root) for store in settings.stores),
                backend=backend,
                backend_options=backend_options,
                max_attempts=int(raw.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
                poll_interval_s=float(raw.get("poll_interval_s", 0.5)),
                provenance_timeout_s=float(raw.get("provenance_timeout_s", 60.0)),
                script_roots=_directories(raw.get("script_roots", []), "script_roots"),
                input_roots=_directories(raw.get("input_roots", []), "input_roots"),
                allow_adhoc_configs=allow_adhoc,
                # The local backend refuses root itself (it is the one that would run jobs as root).
                job_user=job_user(backend_options.get("local", {}).get("run_as"), allow_root=True),
            )
        except (TypeError, ValueError) as e:
            raise ConfigurationError(f"invalid [services.scheduler] settings: {e}") from e
        check_roots(options)
        return options


def _directories(value: Any, key: str) -> tuple[Path, ...]:
    """A list of absolute directories (a string is a list of paths separated by ':', as in an environment variable)."""
    if isinstance(value, str):
        value = [part for part in value.split(os.pathsep) if part]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str | Path) and str(v) for v in value):
        raise ValueError(f'{key} must be a list of absolute directories, e.g. ["/opt/pipelines"]; got {value!r}')
    paths = tuple(Path(v) for v in value)
    for path in paths:
        if not path.is_absolute():
            raise ValueError(f"{key} entry {str(path)!r} must be an absolute directory")
    return paths


def _overlap(a: Path, b: Path) -> bool:
    """Whether one of two directories is, or is inside, the other (both fully resolved)."""
    ra, rb = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return ra == rb or ra in rb.parents or rb in ra.parents


def check_roots(options: SchedulerOptions) -> None:
    """Refuse script roots that are missing, writable by the jobs' user or by everyone, or that overlap a store
    root, an input root or the runs' work directories (anything uploaded or written by jobs could then run)."""
    others = [(root, "store root") for root in options.store_roots]
    others += [(root, "input root ([services.scheduler] input_roots)") for root in options.input_roots]
    others.append((options.workdir_root, "the runs' work directories (<data_dir>/scheduler)"))
    for root in options.script_roots:
        where = f"[services.scheduler] script_roots entry {root}"
        if not root.is_dir():
            raise ConfigurationError(f"{where} is not an existing directory; create it or fix the path")
        for other, what in others:
            if _overlap(root, other):
                raise ConfigurationError(
                    f"{where} overlaps the {what} {other}: files written there would become runnable scripts; "
                    "keep scripts in a directory of their own, outside every store and data directory"
                )
        if writable_by_others(root, options.job_user):
            raise ConfigurationError(
                f"{where} can be written to by the jobs' user or by everyone: jobs could then plant scripts; "
                "make it writable by administrators only (e.g. chmod 755, owned by root)"
            )
    user = options.job_user
    if user is not None and not user.can_reach(options.workdir_root):
        raise ConfigurationError(
            f"the jobs' user {user.name} ([services.scheduler.backend_options.local] run_as) cannot enter the "
            f"directories above {options.workdir_root}; make them traversable (chmod o+x) or move data_dir"
        )


@dataclass(frozen=True)
class WorkflowExtras:
    """obsflow's own [Options] keys: temporary-product patterns, attempts per job, where bare names live."""

    cleanup: tuple[str, ...] = ()
    max_attempts: int | None = None
    input_dir: str | None = None


def workflow_extras(config_text: str) -> WorkflowExtras:
    """Read `obsflow_cleanup`, `obsflow_max_attempts` and `obsflow_input_dir` from a config's [Options]."""
    try:
        options = tomllib.loads(config_text).get("Options", {})
    except tomllib.TOMLDecodeError as e:
        raise WorkflowConfigError(f"the workflow config is not valid TOML: {e}") from e
    cleanup = options.get("obsflow_cleanup", [])
    if isinstance(cleanup, str):
        cleanup = [cleanup]
    if not isinstance(cleanup, list) or not all(isinstance(p, str) and p for p in cleanup):
        raise WorkflowConfigError('Options obsflow_cleanup must be a list of glob patterns, e.g. ["*.tmp"]')
    for pattern in cleanup:
        check_cleanup_pattern(pattern)
    attempts = options.get("obsflow_max_attempts")
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
        raise WorkflowConfigError(f"Options obsflow_max_attempts must be a whole number ≥ 1, got {attempts!r}")
    input_dir = options.get("obsflow_input_dir")
    if input_dir is not None and not isinstance(input_dir, str):
        raise WorkflowConfigError("Options obsflow_input_dir must be a directory path")
    return WorkflowExtras(tuple(cleanup), attempts, input_dir)


def check_cleanup_pattern(pattern: str) -> None:
    """Refuse a cleanup pattern that could reach outside the run's work directory."""
    if pattern.startswith(("/", "~")) or ".." in Path(pattern).parts:
        raise WorkflowConfigError(
            f"cleanup pattern {pattern!r} must be relative to the run's work directory, without '..'"
        )
