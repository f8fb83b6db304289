"""The OpenAPI 3.1 document of the ingest service's HTTP API (served at /api/v1/openapi.json and /openapi.json)."""

from __future__ import annotations

from typing import Any

from shared.api.base import component_schemas
from shared.api.ingest import INGEST_MODELS
from shared.auth import Role
from shared.http.openapi import error_response, json_body, json_response, operation, path_param, ref
from shared.http.openapi import openapi_document as shared_document

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._+-]*$", "maxLength": 255,
         "description": "one flat name: letters, digits, '.', '_', '+', '-', starting with a letter or digit, "
                        "without '..'"}
_TYPE = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "e.g. uvh5"}
_CHECKSUM = {"type": "string", "pattern": "^(xxh3-128|md5):[0-9a-f]{32}$",
             "description": "xxh3-128:<32 hex> (for a directory, its tree digest) or md5:<32 hex>"}
_SIZE = {"type": "integer", "minimum": 0, "description": "bytes; above the site's max_file_bytes is a 413"}
_METADATA = {"type": ["object", "null"], "description": "free-form, kept with the file's provenance"}

_SCHEMAS: dict[str, Any] = {
    **component_schemas(INGEST_MODELS),
    "Announcement": {"type": "object", "required": ["name", "type", "size", "checksum"], "properties": {
        "name": _NAME, "type": _TYPE, "size": _SIZE, "checksum": _CHECKSUM, "metadata": _METADATA}},
    "LocalUpload": {"type": "object", "required": ["path", "type"], "properties": {
        "path": {"type": "string", "description": "an absolute path under one of the site's source_roots"},
        "type": _TYPE, "name": {**_NAME, "type": ["string", "null"], "description": "default: the path's last part"},
        "size": {**_SIZE, "type": ["integer", "null"]}, "checksum": {**_CHECKSUM, "type": ["string", "null"]},
        "md5": {"type": ["boolean", "null"], "description": "also compute and keep the md5"},
        "metadata": _METADATA}},
}

# Refusals of an ingest (services/ingest/minting.py HTTP_STATUS): the error's code is the refusal's code.
_REFUSALS = {
    "400": error_response("invalid_name, invalid_type, invalid_size, invalid_checksum or invalid_path"),
    "409": error_response("name_conflict: a file of that name exists with other content"),
    "413": error_response("too_large: the size is above the site's max_file_bytes"),
    "507": error_response("no_store: no online store has room; free space, raise a capacity or bring one online"),
}
# The ticket's upload_id is where the bytes go (schemathesis follows it in its stateful tests).
_SEND_BYTES = {"SendTheBytes": {"operationId": "sendUploadBytes",
                                "parameters": {"upload_id": "$response.body#/upload_id"}}}
_MINTED = {"200": json_response("it was minted already with this content: nothing changed", ref("MintAnswer")),
           "201": json_response("minted", ref("MintAnswer"))}


def openapi_document() -> dict[str, Any]:
    """The ingest service's document: the two-phase upload, the local-path upload and minted files."""
    paths: dict[str, Any] = {
        "/api/v1/uploads": {"post": operation(
            "announce an upload (name, size, checksum): where to PUT its bytes", role=Role.READ_APPEND,
            body=json_body(ref("Announcement")),
            responses={"201": {**json_response("a new pending upload", ref("UploadTicket")), "links": _SEND_BYTES},
                       "200": json_response("the same upload is pending already (its ticket), or the file is "
                                            "minted already ({file, created: false})",
                                            {"oneOf": [ref("UploadTicket"), ref("MintAnswer")]}),
                       **_REFUSALS})},
        "/api/v1/uploads/{upload_id}": {"put": operation(
            "send the bytes of an announced upload; they are verified against the announcement and minted",
            role=Role.READ_APPEND, parameters=[path_param("upload_id", "from the announcement's ticket")],
            operation_id="sendUploadBytes",
            body={"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}},
            responses={**_MINTED, **_REFUSALS,
                       "403": error_response("the upload belongs to another account (or the role is too low)"),
                       "404": error_response("unknown_upload: expired, finished or never announced"),
                       "409": error_response("upload_in_progress: another request is sending it now; or "
                                             "name_conflict"),
                       "422": error_response("size_mismatch or checksum_mismatch: the bytes are not what was "
                                             "announced")})},
        "/api/v1/uploads/local": {"post": operation(
            "ingest a file or directory this server can read, under the site's source roots", role=Role.READ_APPEND,
            body=json_body(ref("LocalUpload")),
            responses={**_MINTED, **_REFUSALS,
                       "404": error_response("not_found: nothing exists at the path"),
                       "422": error_response("size_mismatch or checksum_mismatch with what was claimed")})},
        "/api/v1/files/{name}": {"get": operation(
            "a file minted at this site, with its local instances", role=Role.READ_ONLY,
            parameters=[path_param("name", "the file name", "zen.2459122.30000.sum.uvh5")],
            responses={"200": json_response("the file", ref("FileAnswer")),
                       "404": error_response("no file of that name was minted at this site")})},
    }
    return shared_document(
        "ingest", "Turns bytes into verified, immutable files: announced uploads, local paths.", paths, _SCHEMAS,
    )
