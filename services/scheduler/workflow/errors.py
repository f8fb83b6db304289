"""Errors the workflow reader and planner raise: each message names the problem and the fix."""

from __future__ import annotations

from shared.errors import PermanentError


class WorkflowError(PermanentError, ValueError):
    """Base of every workflow reading or planning error."""


class WorkflowConfigError(WorkflowError):
    """A workflow configuration (hera_opm TOML) that cannot be read or cannot work."""


class WorkflowFilesError(WorkflowError):
    """A list of input files that cannot be planned (empty, duplicated names, unsafe characters)."""
