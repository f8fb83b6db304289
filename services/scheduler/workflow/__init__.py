"""Reading hera_opm workflow configs and planning their job graphs (pure domain code, no I/O but reading)."""

from services.scheduler.workflow.errors import WorkflowConfigError, WorkflowError, WorkflowFilesError
from services.scheduler.workflow.loader import load_workflow
from services.scheduler.workflow.model import ActionSpec, PlannedJob, WorkflowConfig, WorkflowOptions
from services.scheduler.workflow.observations import DEFAULT_NIGHT_GAP_DAYS, group_into_nights, julian_date_of
from services.scheduler.workflow.planner import plan_workflow

__all__ = [
    "DEFAULT_NIGHT_GAP_DAYS",
    "ActionSpec",
    "PlannedJob",
    "WorkflowConfig",
    "WorkflowConfigError",
    "WorkflowError",
    "WorkflowFilesError",
    "WorkflowOptions",
    "group_into_nights",
    "julian_date_of",
    "load_workflow",
    "plan_workflow",
]
