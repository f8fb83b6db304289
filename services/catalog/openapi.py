"""The OpenAPI 3.1 document of the catalog's HTTP API (served at /api/v1/openapi.json and /openapi.json)."""

from __future__ import annotations

from typing import Any

from services.catalog.reads import MAX_RECENT
from services.catalog.search import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, search_targets
from shared.auth import Role
from shared.http.openapi import (
    error_response,
    json_body,
    json_response,
    operation,
    path_param,
    query_param,
    ref,
)
from shared.http.openapi import openapi_document as shared_document

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_NUMBER = {"type": ["number", "null"]}

_SCHEMAS: dict[str, Any] = {
    "File": {"type": "object", "required": ["name", "size", "checksum", "file_type", "n_instances"], "properties": {
        "name": {"type": "string"}, "size": {"type": "integer"}, "checksum": {"type": "string"},
        "file_type": {"type": "string"}, "observation_id": {"type": ["string", "null"]},
        "start_jd": _NULLABLE_NUMBER, "duration_s": _NULLABLE_NUMBER,
        "origin_site": {"type": "string"}, "uploader": {"type": "string"}, "created_at": _TIME,
        "produced_by": {"type": ["object", "null"]}, "n_instances": {"type": "integer"},
        "instance_sites": {"type": "array", "items": {"type": "string"}}}},
    "Instance": {"type": "object", "required": ["site", "store", "path", "local"], "properties": {
        "site": {"type": "string"}, "store": {"type": "string"}, "path": {"type": "string"},
        "verified_at": _TIME, "local": {"type": "boolean"}}},
    "Observation": {"type": "object", "required": ["observation_id", "start_jd", "n_files", "files"], "properties": {
        "observation_id": {"type": "string"}, "start_jd": {"type": "number"}, "duration_s": _NULLABLE_NUMBER,
        "session_id": {"type": ["string", "null"]}, "n_files": {"type": "integer"},
        "files": {"type": "array", "items": {"type": "string"}}}},
    "Session": {"type": "object", "required": ["session_id", "start_jd", "end_jd", "status"], "properties": {
        "session_id": {"type": "string"}, "start_jd": {"type": "number"}, "end_jd": {"type": "number"},
        "n_observations": {"type": "integer"}, "last_seen_at": _TIME, "closed_at": {"type": ["string", "null"]},
        "status": {"enum": ["open", "closed"]}, "n_files": {"type": "integer"}}},
    "SearchRequest": {"type": "object", "additionalProperties": False, "properties": {
        "target": {"enum": search_targets(), "default": "files"},
        "query": {"type": ["object", "null"], "default": {},
                  "description": "a clause tree (docs/catalog-search.md); {} or null matches everything"},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "cursor": {"type": ["string", "null"], "description": "next_cursor of the previous page"},
        "offset": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_OFFSET,
                   "description": "rows to skip (a cursor is faster; not both)"}}},
    "SearchPage": {"type": "object", "required": ["results", "next_cursor"], "properties": {
        "results": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {"type": ["string", "null"], "description": "set when the page is full"}}},
}


def _read(summary: str, ok: dict[str, Any], *params: dict[str, Any], refusals: dict[str, Any]) -> dict[str, Any]:
    return {"get": operation(summary, role=Role.READ_ONLY, parameters=params,
                             responses={"200": ok, **refusals})}


def _count(name: str, description: str) -> dict[str, Any]:
    return query_param(name, description, {"type": "integer", "minimum": 1, "maximum": MAX_RECENT})


def _results(item: str) -> dict[str, Any]:
    return {"type": "object", "required": ["results"],
            "properties": {"results": {"type": "array", "items": ref(item)}}}


def openapi_document() -> dict[str, Any]:
    """The catalog's document: files, instances, observations, sessions, search (read-only) and closing (admin)."""
    bad_query = {"400": error_response("a query parameter is out of range; the message says which")}
    unknown = {"404": error_response("no file, observation or session of that name at this site")}
    instances = {"type": "object", "required": ["file", "site", "instances"], "properties": {
        "file": {"type": "string"}, "site": {"type": "string"},
        "instances": {"type": "array", "items": ref("Instance")}}}
    status = query_param("status", "only open or only closed sessions", {"enum": ["open", "closed"]})
    closed = {"type": "object", "required": ["session_id", "closed_at", "event_id", "files"], "properties": {
        "session_id": {"type": "string"}, "closed_at": _TIME, "event_id": {"type": "string"},
        "files": {"type": "integer"}}}
    name = path_param("name", "the file name", "zen.2459122.30000.sum.uvh5")
    session_id = path_param("session_id", "the start of its first observation", "2459122.30000")
    paths: dict[str, Any] = {
        "/api/v1/files": _read("the most recently minted files", json_response("newest first", _results("File")),
                               _count("recent", "how many (default 20)"), refusals=bad_query),
        "/api/v1/files/{name}": _read("one file", json_response("the file", ref("File")), name, refusals=unknown),
        "/api/v1/files/{name}/instances": _read(
            "every copy of a file, at this site and the others", json_response("this site's copies first", instances),
            name, refusals=unknown),
        "/api/v1/observations/{observation_id}": _read(
            "one observation and its files", json_response("the observation", ref("Observation")),
            path_param("observation_id", "the files' common prefix", "zen.2459122.30000"), refusals=unknown),
        "/api/v1/sessions": _read("the latest observing sessions", json_response("newest first", _results("Session")),
                                  status, _count("limit", "how many (default 100)"), refusals=bad_query),
        "/api/v1/sessions/{session_id}": _read(
            "one observing session", json_response("the session", ref("Session")), session_id, refusals=unknown),
        "/api/v1/sessions/{session_id}/close": {"post": operation(
            "close an open session now and emit its session.closed event (once)", role=Role.ADMIN,
            parameters=[session_id],
            responses={"200": json_response("closed", closed), **unknown,
                       "409": error_response("already closed (already_closed), or it received an observation "
                                             "meanwhile (busy): try again")})},
        "/api/v1/search": {"post": operation(
            "one page of a search of files, observations or sessions", role=Role.READ_ONLY,
            body=json_body(ref("SearchRequest")),
            description="A search that cannot run is a 400 whose error has code `invalid_search` and `path`, the "
                        "clause at fault (e.g. `$.and[0].size`); see docs/catalog-search.md.",
            responses={"200": json_response("one page", ref("SearchPage"))})},
    }
    return shared_document(
        "catalog", "What exists, where, from which night: files, instances, observations, sessions.", paths, _SCHEMAS,
    )
