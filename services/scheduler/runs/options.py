"""The scheduler's settings (`[services.scheduler]`) and the obsflow keys a workflow's [Options] may carry.

hera_opm ignores [Options] keys it does not know, so obsflow's own keys (`obsflow_cleanup`,
`obsflow_max_attempts`, `obsflow_input_dir`) keep a config usable by hera_opm unchanged.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.scheduler.backends import BACKEND_NAMES
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

    @classmethod
    def from_settings(cls, settings: Settings) -> SchedulerOptions:
        """Read `[services.scheduler]`: backend, backend_options.<name>, max_attempts, poll_interval_s."""
        raw = settings.service_options("scheduler")
        backend = str(raw.get("backend", "local"))
        if backend not in BACKEND_NAMES:
            raise ConfigurationError(
                f"services.scheduler.backend = {backend!r} is not a backend; choose one of {', '.join(BACKEND_NAMES)}"
            )
        try:
            return cls(
                workdir_root=Path(settings.data_dir) / "scheduler",
                store_roots=tuple(Path(store.root) for store in settings.stores),
                backend=backend,
                backend_options={str(k): dict(v) for k, v in dict(raw.get("backend_options", {})).items()},
                max_attempts=int(raw.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
                poll_interval_s=float(raw.get("poll_interval_s", 0.5)),
                provenance_timeout_s=float(raw.get("provenance_timeout_s", 60.0)),
            )
        except (TypeError, ValueError) as e:
            raise ConfigurationError(f"invalid [services.scheduler] settings: {e}") from e


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
