"""The OpenAPI 3.1 document of the scheduler's HTTP API (served at /api/v1/openapi.json and /openapi.json)."""

from __future__ import annotations

from typing import Any

from services.scheduler.backends import BACKEND_NAMES
from services.scheduler.routes import TRIGGERS
from shared.api.base import component_schemas
from shared.api.scheduler import SCHEDULER_MODELS
from shared.auth import Role
from shared.http.openapi import error_response, json_body, json_response, operation, path_param, query_param, ref
from shared.http.openapi import openapi_document as shared_document

_TEXT = {"type": "string", "minLength": 1}
_BACKEND = {"enum": [*BACKEND_NAMES, None], "description": "default: the site's [services.scheduler] backend"}

_SCHEMAS: dict[str, Any] = {
    **component_schemas(SCHEDULER_MODELS),
    "WorkflowRegistration": {"type": "object", "required": ["name", "config_text", "trigger"], "properties": {
        "name": _TEXT, "config_text": {**_TEXT, "description": "the TOML text of a hera_opm workflow"},
        "trigger": {"enum": list(TRIGGERS)}, "backend": _BACKEND,
        "match": {"type": ["object", "null"], "description": "file.minted workflows only: which files start a run "
                                                             "(a clause tree; docs/scheduler.md)"}}},
    "RunRequest": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "minItems": 1, "items": _TEXT, "description": "input files, in time order"},
        "workflow": {**_TEXT, "type": ["string", "null"], "description": "a registered workflow; or send config_text"},
        "config_text": {**_TEXT, "type": ["string", "null"],
                        "description": "an ad-hoc workflow's TOML text (when no workflow is named)"},
        "backend": _BACKEND}},
}


def openapi_document() -> dict[str, Any]:
    """The scheduler's document: workflows (register: admin), runs (start and retry: read-append)."""
    run_id = path_param("run_id", "as returned when the run started")
    no_run = {"404": error_response("no run with that id")}
    retry_body = {"type": "object", "properties": {
        "failed_only": {"type": "boolean", "default": True, "description": "false: every ended job runs again"}}}
    paths: dict[str, Any] = {
        "/api/v1/workflows": {
            "post": operation(
                "register (or replace) a workflow and what starts it", role=Role.ADMIN,
                body=json_body(ref("WorkflowRegistration")),
                responses={"201": json_response("registered", ref("WorkflowRegistered"))}),
            "get": operation(
                "the registered workflows, by name", role=Role.READ_ONLY,
                responses={"200": json_response("the workflows", ref("WorkflowList"))}),
        },
        "/api/v1/runs": {
            "post": operation(
                "start a run of a registered workflow, or of an ad-hoc config, over files", role=Role.READ_APPEND,
                body=json_body(ref("RunRequest")),
                responses={"201": json_response("planned and queued", ref("RunStarted")),
                           "404": error_response("no registered workflow of that name")}),
            "get": operation(
                "the newest runs with their state and job counts", role=Role.READ_ONLY,
                parameters=[query_param("limit", "how many (default 100; clamped to 1-1000)", {"type": "integer"})],
                responses={"200": json_response("newest first", ref("RunList")),
                           "400": error_response("limit is not a whole number")}),
        },
        "/api/v1/runs/{run_id}": {"get": operation(
            "one run: its jobs with their states, attempts and last errors, and its provenance", role=Role.READ_ONLY,
            parameters=[run_id], responses={"200": json_response("the run", ref("RunDetail")), **no_run})},
        "/api/v1/runs/{run_id}/retry": {"post": operation(
            "start a new round for the run's failed jobs (or all ended ones)", role=Role.READ_APPEND,
            parameters=[run_id], body={"required": False, "content": {"application/json": {"schema": retry_body}}},
            responses={"200": json_response("restarted", ref("RunRetried")), **no_run})},
    }
    return shared_document(
        "scheduler", "Runs the analysis pipeline: workflows, the runs they start, their jobs.", paths, _SCHEMAS,
    )
