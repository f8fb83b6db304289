"""What every service's OpenAPI document shares: info, bearer auth, the Error schema, the runner's routes.

A service describes its own operations with `operation(...)` (which adds the responses every operation can give:
401/403 for its minimum role, 400/413 when it takes a body, 503 when a backend is down) and assembles its
document with `openapi_document(...)`; `openapi_routes(document)` serves it at /api/v1/openapi.json and
/openapi.json. The minimum role of each operation is its `x-minimum-role`; tests check it against the route table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from shared.auth import Role

JsonSchema = dict[str, Any]
SPEC_PATHS = ("/api/v1/openapi.json", "/openapi.json")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

ERROR_SCHEMA: JsonSchema = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "description": "code: a stable word to branch on; message: what was wrong and what to do; some errors "
                       "add details (e.g. a search error's `path`)",
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    }},
}


def ref(name: str) -> JsonSchema:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(description: str, schema: JsonSchema | None = None) -> JsonSchema:
    """A response with a JSON body of `schema` (any JSON object when None)."""
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def error_response(description: str, *, retry_after: bool = False) -> JsonSchema:
    """A response with the Error body `{"error": {"code", "message"}}` (and a Retry-After header when it has one)."""
    response = json_response(description, ref("Error"))
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                               "schema": {"type": "integer", "minimum": 0}}}
    return response


def path_param(name: str, description: str, example: str | None = None) -> JsonSchema:
    """A required string path parameter."""
    param: JsonSchema = {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
                         "description": description}
    if example is not None:
        param["example"] = example
    return param


def query_param(name: str, description: str, schema: JsonSchema) -> JsonSchema:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def json_body(schema: JsonSchema) -> JsonSchema:
    """A required JSON request body."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def operation(
    summary: str,
    *,
    role: Role | None,
    responses: Mapping[str, JsonSchema],
    parameters: Sequence[JsonSchema] = (),
    body: JsonSchema | None = None,
    description: str | None = None,
    uses_backends: bool = True,
    operation_id: str | None = None,
) -> JsonSchema:
    """One operation: its own responses plus those every operation gives (auth, body refusals, unavailability).

    `role` None means public (no token needed; a bad token sent anyway is still refused with 401). An operation's
    own responses replace the common ones of the same status. `uses_backends` False: it never touches the
    database or the broker, so it is never a 503.
    """
    common: dict[str, JsonSchema] = {
        "401": error_response("no token, or a malformed, forged or expired one" if role else
                              "a token was sent and it is malformed, forged or expired (send none, or a valid one)"),
    }
    if role is not None and role > min(Role):
        common["403"] = error_response(f"the token's role is below {role.label}")
    if body is not None or parameters:
        common["400"] = error_response("a value is not acceptable (a wrong type, out of range, a NUL character) or "
                                       "the body is not JSON of the declared shape; the message says which")
    if body is not None:
        common["408"] = error_response("the body stopped arriving (body_timeout): no byte for the read timeout, or "
                                       "not all of it within the body timeout; the connection is closed")
        common["413"] = error_response("the body is larger than the service accepts")
        if "application/json" in body.get("content", {}):
            common["415"] = error_response("the body is not JSON (Content-Type application/json, UTF-8)")
    if uses_backends:
        common["503"] = error_response("the database or the broker is unreachable right now; try again shortly")
    op: JsonSchema = {"summary": summary, "parameters": list(parameters), "responses": {**common, **responses}}
    if description:
        op["description"] = description
    if operation_id:
        op["operationId"] = operation_id  # what links name
    if body is not None:
        op["requestBody"] = body
    if role is None:
        op["security"] = []
    else:
        op["x-minimum-role"] = role.label
    return op


def _shared_paths(service: str) -> dict[str, JsonSchema]:
    """The routes the service runner gives every service: probes, metrics, tokens and this document."""
    alive = {"type": "object", "required": ["service", "status"],
             "properties": {"service": {"const": service}, "status": {"const": "alive"}}}
    ready = {"type": "object", "required": ["ready"], "properties": {
        "ready": {"type": "boolean"}, "problems": {"type": "array", "items": {"type": "string"}},
        "reason": {"type": "string"}}}
    credentials = {"type": "object", "required": ["name", "password"], "properties": {
        "name": {"type": "string", "description": "the account name"},
        "password": {"type": "string", "format": "password"}}}
    issued = {"type": "object", "required": ["token", "account", "role", "expires_in_s"], "properties": {
        "token": {"type": "string", "description": "send it as `Authorization: Bearer <token>`"},
        "account": {"type": "string"}, "role": {"enum": [r.label for r in Role]},
        "expires_in_s": {"type": "number"}}}
    spec = operation("this OpenAPI document", role=None, uses_backends=False,
                     responses={"200": json_response("OpenAPI 3.1", {"type": "object", "required": ["openapi"]})})
    paths: dict[str, JsonSchema] = {
        "/healthz": {"get": operation("the process is alive", role=None, uses_backends=False,
                                      responses={"200": json_response("alive", alive)})},
        "/readyz": {"get": operation(
            "the service can work: its database and broker answer", role=None,
            responses={"200": json_response("ready", ready),
                       "503": json_response("not ready; `problems` (or `reason`) says why", ready)})},
        "/metrics": {"get": operation(
            "Prometheus figures of this process", role=None, uses_backends=False,
            responses={"200": {"description": "the Prometheus text format",
                               "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        "/api/v1/tokens": {"post": operation(
            "trade an account's password for an API token", role=None, body=json_body(credentials),
            responses={"201": json_response("the token", issued),
                       "401": error_response("unknown account or wrong password (or a bad token was sent)"),
                       "429": error_response("too many failed attempts for this account or address; wait the "
                                             "seconds Retry-After says", retry_after=True),
                       "503": error_response("every password check is busy, or the database is unreachable; try "
                                             "again after Retry-After", retry_after=True)})},
    }
    for path in SPEC_PATHS:
        paths[path] = {"get": spec}
    return paths


def openapi_document(
    service: str,
    description: str,
    paths: Mapping[str, JsonSchema],
    schemas: Mapping[str, JsonSchema] | None = None,
) -> JsonSchema:
    """The OpenAPI 3.1 document of `service`: its own paths and schemas plus the shared ones."""
    overlap = set(paths) & set(_shared_paths(service))
    if overlap:
        raise ValueError(f"{service} redefines shared paths {sorted(overlap)}")
    return {
        "openapi": "3.1.0",
        "info": {"title": f"obsflow {service}", "version": "1", "description": description},
        "paths": {**_shared_paths(service), **paths},
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, **(schemas or {})},
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "an obsflow token: `obsflow accounts token NAME` or POST /api/v1/tokens"}},
        },
        "security": [{"bearerAuth": []}],
    }


def minimum_roles(document: Mapping[str, Any]) -> dict[tuple[str, str], str | None]:
    """(METHOD, path) → the operation's x-minimum-role, None for a public one."""
    roles: dict[tuple[str, str], str | None] = {}
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                roles[(method.upper(), path)] = None if op.get("security") == [] else op.get("x-minimum-role")
    return roles


def openapi_routes(document: Mapping[str, Any]) -> list[web.RouteDef]:
    """GET /api/v1/openapi.json and /openapi.json (public), serving `document`."""
    text = json.dumps(document)

    async def serve_openapi(_request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json")

    return [web.get(path, serve_openapi) for path in SPEC_PATHS]
