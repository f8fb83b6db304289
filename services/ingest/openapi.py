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
_OPTIONAL_NUMBER = {"type": ["number", "null"]}
# A replica's record, as its origin's file.minted said (shared.api.ingest.ReplicaFile). The example is a file the
# test site does not hold, so schemathesis's examples reach the 201 ticket.
_REPLICA_EXAMPLE = {
    "name": "zen.2459122.30001.sum.uvh5", "size": 5, "checksum": "xxh3-128:" + "1" * 32, "file_type": "uvh5",
    "observation_id": "zen.2459122.30001", "start_jd": 2459122.30001, "duration_s": 16.1, "origin_site": "karoo",
    "uploader": "correlator", "created_at": "2020-09-30T00:00:00+00:00", "produced_by": None,
}
_REPLICA_FILE = {
    "type": "object", "required": ["name", "size", "checksum", "file_type", "origin_site", "uploader", "created_at"],
    "description": "the file as its origin site minted it (its file.minted): every byte is verified against size and "
                   "checksum, the rest becomes this site's record of it",
    "properties": {
        "name": _NAME, "size": _SIZE, "file_type": _TYPE,
        "checksum": {"type": "string", "pattern": "^xxh3-128:[0-9a-f]{32}$",
                     "description": "xxh3-128:<32 hex>, as minted (for a directory, its tree digest)"},
        "observation_id": {"type": ["string", "null"]}, "start_jd": _OPTIONAL_NUMBER,
        "duration_s": _OPTIONAL_NUMBER,
        "origin_site": {"type": "string", "minLength": 1, "description": "the site that minted it"},
        "uploader": {"type": "string", "minLength": 1, "description": "who brought it in at its origin"},
        "created_at": {"type": "string", "description": "when it was minted: ISO 8601 with its UTC offset"},
        "produced_by": _METADATA},
}

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
    "ReplicaClaim": _REPLICA_FILE,
    "ReplicaAnnouncement": {"type": "object", "required": ["file"], "properties": {"file": ref("ReplicaClaim")},
                            "example": {"file": _REPLICA_EXAMPLE}},
    "LocalReplica": {"type": "object", "required": ["file", "path"], "properties": {
        "file": ref("ReplicaClaim"),
        "path": {"type": "string", "description": "an absolute path under one of the site's source_roots"}}},
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
_REPLICA_REFUSALS = {
    **_REFUSALS,
    "400": error_response("invalid_name, invalid_type, invalid_size or invalid_checksum (a replica is verified "
                          "against xxh3-128 only), or a body that is not a ReplicaRequest"),
    "409": error_response("name_conflict: this site has a file of that name with another checksum"),
}


def openapi_document() -> dict[str, Any]:
    """The ingest service's document: the two-phase upload, the local-path upload, replicas and minted files."""
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
                                             "announced (or, for a replica, what its origin minted)")})},
        "/api/v1/uploads/local": {"post": operation(
            "ingest a file or directory this server can read, under the site's source roots", role=Role.READ_APPEND,
            body=json_body(ref("LocalUpload")),
            responses={**_MINTED, **_REFUSALS,
                       "404": error_response("not_found: nothing exists at the path"),
                       "422": error_response("size_mismatch or checksum_mismatch with what was claimed")})},
        "/api/v1/replicas": {"post": operation(
            "announce a replica (a copy of a file minted at another site): where to PUT its bytes",
            role=Role.READ_APPEND, body=json_body(ref("ReplicaAnnouncement")),
            description="The bytes go to the ticket's URL (PUT /api/v1/uploads/{upload_id}); they are verified "
                        "against the size and checksum the origin minted and recorded as its file (origin site, "
                        "uploader, creation time): this site emits only instance.created.",
            responses={"201": {**json_response("a new pending replica", ref("UploadTicket")), "links": _SEND_BYTES},
                       "200": json_response("the same replica is pending already (its ticket), or this site holds "
                                            "the file already with this checksum ({file, created: false}: send "
                                            "nothing)", {"oneOf": [ref("UploadTicket"), ref("MintAnswer")]}),
                       **_REPLICA_REFUSALS})},
        "/api/v1/replicas/local": {"post": operation(
            "adopt a replica lying beneath the site's source roots (the server copies and verifies it)",
            role=Role.READ_APPEND, body=json_body(ref("LocalReplica")),
            responses={**_MINTED, **_REPLICA_REFUSALS,
                       "400": error_response("invalid_name, invalid_type, invalid_size, invalid_checksum or "
                                             "invalid_path, or a body that is not a LocalReplicaRequest"),
                       "404": error_response("not_found: nothing exists at the path"),
                       "422": error_response("size_mismatch or checksum_mismatch: the copy is not what its origin "
                                             "minted")})},
        "/api/v1/files/{name}": {"get": operation(
            "a file minted at this site, with its local instances", role=Role.READ_ONLY,
            parameters=[path_param("name", "the file name", "zen.2459122.30000.sum.uvh5")],
            responses={"200": json_response("the file", ref("FileAnswer")),
                       "404": error_response("no file of that name was minted at this site")})},
    }
    return shared_document(
        "ingest", "Turns bytes into verified, immutable files: announced uploads, local paths.", paths, _SCHEMAS,
    )
