"""The OpenAPI 3 description of the catalog's HTTP API, built as a plain dict."""

from __future__ import annotations

from typing import Any

from services.catalog.search import DEFAULT_LIMIT, MAX_LIMIT, search_targets


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _query_param(name: str, description: str, maximum: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1, "maximum": maximum}
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_ERRORS = {
    "401": _json(_ref("Error"), "no token, or a bad one"),
    "403": _json(_ref("Error"), "the token's role is below the endpoint's minimum"),
}
_NOT_FOUND = {"404": _json(_ref("Error"), "unknown name or id"), **_ERRORS}


def _get(summary: str, ok: dict[str, Any], params: list[dict[str, Any]], errors: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params, "responses": {"200": ok, **errors},
                    "x-minimum-role": "read-only"}}


_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}}},
    "SearchError": {"type": "object", "properties": {
        "error": {"const": "invalid_search"}, "path": {"type": "string"}, "message": {"type": "string"}}},
    "File": {"type": "object", "properties": {
        "name": {"type": "string"}, "size": {"type": "integer"}, "checksum": {"type": "string"},
        "file_type": {"type": "string"}, "observation_id": {"type": ["string", "null"]},
        "start_jd": {"type": ["number", "null"]}, "duration_s": {"type": ["number", "null"]},
        "origin_site": {"type": "string"}, "uploader": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"}, "produced_by": {"type": ["object", "null"]},
        "n_instances": {"type": "integer"}, "instance_sites": {"type": "array", "items": {"type": "string"}}}},
    "Instance": {"type": "object", "properties": {
        "site": {"type": "string"}, "store": {"type": "string"}, "path": {"type": "string"},
        "verified_at": {"type": "string", "format": "date-time"}, "local": {"type": "boolean"}}},
    "Observation": {"type": "object", "properties": {
        "observation_id": {"type": "string"}, "start_jd": {"type": "number"},
        "duration_s": {"type": ["number", "null"]}, "session_id": {"type": ["string", "null"]},
        "n_files": {"type": "integer"}, "files": {"type": "array", "items": {"type": "string"}}}},
    "Session": {"type": "object", "properties": {
        "session_id": {"type": "string"}, "start_jd": {"type": "number"}, "end_jd": {"type": "number"},
        "n_observations": {"type": "integer"}, "last_seen_at": {"type": "string", "format": "date-time"},
        "closed_at": {"type": ["string", "null"], "format": "date-time"},
        "status": {"enum": ["open", "closed"]}, "n_files": {"type": "integer"}}},
    "SearchRequest": {"type": "object", "properties": {
        "target": {"enum": search_targets(), "default": "files"},
        "query": {"type": "object", "description": "a clause tree; see docs/catalog-search.md", "default": {}},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "cursor": {"type": "string"}, "offset": {"type": "integer", "minimum": 0}}},
    "SearchPage": {"type": "object", "properties": {
        "results": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {"type": ["string", "null"], "description": "set when the page is full"}}},
}


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI 3.1 document; every endpoint needs a bearer token (minimum role in x-minimum-role)."""
    listing = {"type": "object", "properties": {"results": {"type": "array", "items": _ref("File")}}}
    sessions = {"type": "object", "properties": {"results": {"type": "array", "items": _ref("Session")}}}
    instances = {"type": "object", "properties": {
        "file": {"type": "string"}, "site": {"type": "string"},
        "instances": {"type": "array", "items": _ref("Instance")}}}
    status = {"name": "status", "in": "query", "required": False, "schema": {"enum": ["open", "closed"]}}
    closed = {"type": "object", "properties": {"session_id": {"type": "string"}, "closed_at": {"type": "string"},
                                               "event_id": {"type": "string"}, "files": {"type": "integer"}}}
    paths: dict[str, Any] = {
        "/api/v1/files": _get("the most recently minted files", _json(listing, "newest first"),
                              [_query_param("recent", "how many (default 20)", 10_000)], _ERRORS),
        "/api/v1/files/{name}": _get("one file", _json(_ref("File"), "the file"),
                                     [_path_param("name", "the file name")], _NOT_FOUND),
        "/api/v1/files/{name}/instances": _get(
            "every copy of a file, at this site and the others", _json(instances, "local copies first"),
            [_path_param("name", "the file name")], _NOT_FOUND),
        "/api/v1/observations/{observation_id}": _get(
            "one observation and its files", _json(_ref("Observation"), "the observation"),
            [_path_param("observation_id", "e.g. zen.2459122.30000")], _NOT_FOUND),
        "/api/v1/sessions": _get("the latest observing sessions", _json(sessions, "newest first"),
                                 [status, _query_param("limit", "how many (default 100)", 10_000)], _ERRORS),
        "/api/v1/sessions/{session_id}": _get(
            "one observing session", _json(_ref("Session"), "the session"),
            [_path_param("session_id", "e.g. 2459122.30000")], _NOT_FOUND),
        "/api/v1/sessions/{session_id}/close": {"post": {
            "summary": "close an open session now and emit its session.closed event (once)",
            "parameters": [_path_param("session_id", "e.g. 2459122.30000")], "x-minimum-role": "admin",
            "responses": {"200": _json(closed, "closed"), "409": _json(_ref("Error"), "already closed"),
                          **_NOT_FOUND}}},
        "/api/v1/search": {"post": {
            "summary": "one page of a search of files, observations or sessions", "x-minimum-role": "read-only",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SearchRequest")}}},
            "responses": {"200": _json(_ref("SearchPage"), "one page"),
                          "400": _json(_ref("SearchError"), "the search cannot run; path names the clause"),
                          **_ERRORS}}},
        "/api/v1/openapi.json": {"get": {"summary": "this document", "security": [],
                                         "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "obsflow catalog", "version": "1",
                 "description": "What exists, where, from which night: files, instances, observations, sessions."},
        "paths": paths,
        "components": {"schemas": _SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
