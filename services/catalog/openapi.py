"""The OpenAPI 3.1 document of the catalog's HTTP API (served at /api/v1/openapi.json and /openapi.json)."""

from __future__ import annotations

from typing import Any

from services.catalog.conflicts import MAX_CONFLICTS
from services.catalog.reads import MAX_RECENT
from services.catalog.search import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, search_targets
from shared.api.base import component_schemas
from shared.api.catalog import CATALOG_MODELS
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

_SCHEMAS: dict[str, Any] = {
    **component_schemas(CATALOG_MODELS),
    "SearchRequest": {"type": "object", "additionalProperties": False, "properties": {
        "target": {"enum": search_targets(), "default": "files"},
        "query": {"type": ["object", "null"], "default": {},
                  "description": "a clause tree (docs/catalog-search.md); {} or null matches everything"},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "cursor": {"type": ["string", "null"], "description": "next_cursor of the previous page"},
        "offset": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_OFFSET,
                   "description": "rows to skip (a cursor is faster; not both)"}}},
}


def _read(summary: str, ok: dict[str, Any], *params: dict[str, Any], refusals: dict[str, Any]) -> dict[str, Any]:
    return {"get": operation(summary, role=Role.READ_ONLY, parameters=params,
                             responses={"200": ok, **refusals})}


def _count(name: str, description: str) -> dict[str, Any]:
    return query_param(name, description, {"type": "integer", "minimum": 1, "maximum": MAX_RECENT})


def openapi_document() -> dict[str, Any]:
    """The catalog's document: files, instances, observations, sessions, search, conflicts (read-only) and closing
    (admin)."""
    bad_query = {"400": error_response("a query parameter is out of range; the message says which")}
    unknown = {"404": error_response("no file, observation or session of that name at this site")}
    status = query_param("status", "only open or only closed sessions", {"enum": ["open", "closed"]})
    name = path_param("name", "the file name", "zen.2459122.30000.sum.uvh5")
    session_id = path_param("session_id", "the start of its first observation", "2459122.30000")
    paths: dict[str, Any] = {
        "/api/v1/files": _read("the most recently minted files", json_response("newest first", ref("FileList")),
                               _count("recent", "how many (default 20)"), refusals=bad_query),
        "/api/v1/files/{name}": _read("one file", json_response("the file", ref("CatalogFile")), name,
                                      refusals=unknown),
        "/api/v1/files/{name}/instances": _read(
            "every copy of a file, at this site and the others",
            json_response("this site's copies first", ref("FileInstances")), name, refusals=unknown),
        "/api/v1/observations/{observation_id}": _read(
            "one observation and its files", json_response("the observation", ref("Observation")),
            path_param("observation_id", "the files' common prefix", "zen.2459122.30000"), refusals=unknown),
        "/api/v1/sessions": _read("the latest observing sessions", json_response("newest first", ref("SessionList")),
                                  status, _count("limit", "how many (default 100)"), refusals=bad_query),
        "/api/v1/sessions/{session_id}": _read(
            "one observing session", json_response("the session", ref("Session")), session_id, refusals=unknown),
        "/api/v1/sessions/{session_id}/close": {"post": operation(
            "close an open session now and emit its session.closed event (once)", role=Role.ADMIN,
            parameters=[session_id],
            responses={"200": json_response("closed", ref("SessionClosure")), **unknown,
                       "409": error_response("already closed (already_closed), or it received an observation "
                                             "meanwhile (busy): try again")})},
        "/api/v1/conflicts": _read(
            "names minted by two sites with different contents: the file kept here and the other",
            json_response("newest first", ref("ConflictList")),
            query_param("limit", "how many (default 100)", {"type": "integer", "minimum": 1,
                                                            "maximum": MAX_CONFLICTS}),
            refusals=bad_query),
        "/api/v1/search": {"post": operation(
            "one page of a search of files, observations or sessions", role=Role.READ_ONLY,
            body=json_body(ref("SearchRequest")),
            description="A search that cannot run is a 400 whose error has code `invalid_search` and `path`, the "
                        "clause at fault (e.g. `$.and[0].size`); see docs/catalog-search.md.",
            responses={"200": json_response("one page: files, observations or sessions, as the target says",
                                            ref("AnySearchPage"))})},
    }
    return shared_document(
        "catalog", "What exists, where, from which night: files, instances, observations, sessions.", paths, _SCHEMAS,
    )
