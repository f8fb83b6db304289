"""Execution backends for the scheduler: a local process pool, Slurm and PBS/TORQUE, behind one port."""

from __future__ import annotations

from typing import Any

from services.scheduler.backends.base import (
    Backend,
    BackendError,
    ExternalIdError,
    JobSpec,
    JobState,
    JobStatus,
    JobSubmitError,
)
from shared.errors import ConfigurationError

BACKEND_NAMES = ("local", "slurm", "pbs")

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendError",
    "ExternalIdError",
    "JobSpec",
    "JobState",
    "JobStatus",
    "JobSubmitError",
    "make_backend",
]


def make_backend(name: str, **options: Any) -> Backend:
    """Build the backend called `name` ("local", "slurm" or "pbs") with its keyword options."""
    # Imported here so that choosing one backend never imports (or checks the PATH for) another.
    if name == "local":
        from services.scheduler.backends.local import LocalBackend

        return LocalBackend(**options)
    if name == "slurm":
        from services.scheduler.backends.slurm import SlurmBackend

        return SlurmBackend(**options)
    if name == "pbs":
        from services.scheduler.backends.pbs import PbsBackend

        return PbsBackend(**options)
    raise ConfigurationError(f"unknown scheduler backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}")
