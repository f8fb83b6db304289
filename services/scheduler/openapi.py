"""The OpenAPI 3.1 document of the scheduler's HTTP API (served at /api/v1/openapi.json and /openapi.json)."""

from __future__ import annotations

from typing import Any

from services.scheduler.backends import BACKEND_NAMES
from services.scheduler.routes import TRIGGERS
from shared.auth import Role
from shared.http.openapi import error_response, json_body, json_response, operation, path_param, query_param, ref
from shared.http.openapi import openapi_document as shared_document

_TIME = {"type": "string", "format": "date-time"}
_TEXT = {"type": "string", "minLength": 1}
_BACKEND = {"enum": [*BACKEND_NAMES, None], "description": "default: the site's [services.scheduler] backend"}
_RUN_STATE = {"enum": ["running", "succeeded", "failed"]}

_SCHEMAS: dict[str, Any] = {
    "WorkflowRegistration": {"type": "object", "required": ["name", "config_text", "trigger"], "properties": {
        "name": _TEXT, "config_text": {**_TEXT, "description": "the TOML text of a hera_opm workflow"},
        "trigger": {"enum": list(TRIGGERS)}, "backend": _BACKEND,
        "match": {"type": ["object", "null"], "description": "file.minted workflows only: which files start a run "
                                                             "(a clause tree; docs/scheduler.md)"}}},
    "Workflow": {"type": "object", "required": ["name", "config_sha256", "trigger", "backend", "registered_at"],
                 "properties": {
        "name": {"type": "string"}, "config_text": {"type": "string"}, "config_sha256": {"type": "string"},
        "trigger": {"enum": list(TRIGGERS)}, "match": {"type": ["object", "null"]},
        "backend": {"enum": list(BACKEND_NAMES)}, "registered_at": _TIME}},
    "RunRequest": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "minItems": 1, "items": _TEXT, "description": "input files, in time order"},
        "workflow": {**_TEXT, "type": ["string", "null"], "description": "a registered workflow; or send config_text"},
        "config_text": {**_TEXT, "type": ["string", "null"],
                        "description": "an ad-hoc workflow's TOML text (when no workflow is named)"},
        "backend": _BACKEND}},
    "RunSummary": {"type": "object", "required": ["run_id", "backend", "state", "jobs", "created_at"], "properties": {
        "run_id": {"type": "string"}, "workflow": {"type": ["string", "null"]}, "backend": {"type": "string"},
        "state": _RUN_STATE, "files": {"type": "integer"},
        "jobs": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "count by job state"},
        "created_at": _TIME, "finished_at": {"type": ["string", "null"]}}},
    "RunDetail": {"type": "object", "required": ["run_id", "backend", "workdir", "state", "jobs"], "properties": {
        "run_id": {"type": "string"}, "workflow": {"type": ["string", "null"]}, "backend": {"type": "string"},
        "workdir": {"type": "string"}, "state": _RUN_STATE, "created_at": _TIME,
        "finished_at": {"type": ["string", "null"]}, "input_files": {"type": "array", "items": {"type": "string"}},
        "config_sha256": {"type": "string"}, "provenance": {"type": ["object", "null"]},
        "jobs": {"type": "array", "items": {"type": "object", "required": ["job_key", "action", "state", "attempts"],
                                            "properties": {
            "job_key": {"type": "string"}, "action": {"type": "string"},
            "primary_file": {"type": ["string", "null"]}, "files": {"type": "array"}, "args": {"type": "array"},
            "state": {"type": "string"}, "attempts": {"type": "array", "items": {"type": "object"}},
            "last_error": {"type": ["string", "null"]}}}}}},
}


def openapi_document() -> dict[str, Any]:
    """The scheduler's document: workflows (register: admin), runs (start and retry: read-append)."""
    run_id = path_param("run_id", "as returned when the run started")
    no_run = {"404": error_response("no run with that id")}
    started = {"type": "object", "required": ["run_id", "jobs", "workdir"], "properties": {
        "run_id": {"type": "string"}, "jobs": {"type": "integer"}, "workdir": {"type": "string"}}}
    registered = {"type": "object", "required": ["name", "trigger", "backend", "config_sha256"], "properties": {
        "name": {"type": "string"}, "trigger": {"enum": list(TRIGGERS)}, "backend": {"enum": list(BACKEND_NAMES)},
        "config_sha256": {"type": "string"}}}
    retried = {"type": "object", "required": ["run_id", "restarted_jobs"], "properties": {
        "run_id": {"type": "string"}, "restarted_jobs": {"type": "array", "items": {"type": "string"}}}}
    retry_body = {"type": "object", "properties": {
        "failed_only": {"type": "boolean", "default": True, "description": "false: every ended job runs again"}}}
    paths: dict[str, Any] = {
        "/api/v1/workflows": {
            "post": operation(
                "register (or replace) a workflow and what starts it", role=Role.ADMIN,
                body=json_body(ref("WorkflowRegistration")),
                responses={"201": json_response("registered", registered)}),
            "get": operation(
                "the registered workflows, by name", role=Role.READ_ONLY,
                responses={"200": json_response("the workflows", {
                    "type": "object", "required": ["workflows"],
                    "properties": {"workflows": {"type": "array", "items": ref("Workflow")}}})}),
        },
        "/api/v1/runs": {
            "post": operation(
                "start a run of a registered workflow, or of an ad-hoc config, over files", role=Role.READ_APPEND,
                body=json_body(ref("RunRequest")),
                responses={"201": json_response("planned and queued", started),
                           "404": error_response("no registered workflow of that name")}),
            "get": operation(
                "the newest runs with their state and job counts", role=Role.READ_ONLY,
                parameters=[query_param("limit", "how many (default 100; clamped to 1-1000)", {"type": "integer"})],
                responses={"200": json_response("newest first", {
                    "type": "object", "required": ["runs"],
                    "properties": {"runs": {"type": "array", "items": ref("RunSummary")}}}),
                           "400": error_response("limit is not a whole number")}),
        },
        "/api/v1/runs/{run_id}": {"get": operation(
            "one run: its jobs with their states, attempts and last errors, and its provenance", role=Role.READ_ONLY,
            parameters=[run_id], responses={"200": json_response("the run", ref("RunDetail")), **no_run})},
        "/api/v1/runs/{run_id}/retry": {"post": operation(
            "start a new round for the run's failed jobs (or all ended ones)", role=Role.READ_APPEND,
            parameters=[run_id], body={"required": False, "content": {"application/json": {"schema": retry_body}}},
            responses={"200": json_response("restarted", retried), **no_run})},
    }
    return shared_document(
        "scheduler", "Runs the analysis pipeline: workflows, the runs they start, their jobs.", paths, _SCHEMAS,
    )
