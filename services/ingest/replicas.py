"""HTTP ways in for replicas: copies of files minted at another site, verified against what their origin minted.

`POST /api/v1/replicas` announces the bytes (a pending upload of kind 'replica' that keeps the origin's record) and
the existing `PUT /api/v1/uploads/{id}` receives them; `POST /api/v1/replicas/local` adopts a copy lying beneath a
source root. Both take the ways in of an ordinary upload (the same checks, the same one-pass copy, the same mint
batch) with the origin's record: the files row is the origin's, and only `instance.created` is emitted here.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from services.ingest.ingester import Ingester, Provenance, replica_claim
from services.ingest.minting import check_replica_claim
from services.ingest.path_ingest import ingest_path
from services.ingest.uploads import BadUploadRequest, bound, caller, reserve_for_bytes, respond
from shared.api.base import ApiModel
from shared.api.ingest import LocalReplicaRequest, ReplicaRequest
from shared.auth import Role
from shared.http.body import json_object

Model = TypeVar("Model", bound=ApiModel)


def parse_body(model: type[Model], body: dict[str, Any]) -> Model:
    """The body as `model`, strictly (an integer is an integer, a time an ISO 8601 string with its offset), or a
    400 naming the first field at fault."""
    try:
        return model.model_validate_json(json.dumps(body), strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise BadUploadRequest(f"{where}: {first['msg']} ({e.error_count()} problem(s) in all); send a "
                               f"{model.__name__} as /api/v1/openapi.json describes it") from None


async def announce_replica(ingester: Ingester, request: web.Request) -> web.StreamResponse:
    """POST /api/v1/replicas {file}: where to PUT the bytes of a copy of another site's file; the file itself (200)
    if this site holds it already with that checksum (a retried transfer), 409 if another file has the name."""
    principal = caller(request)
    record = parse_body(ReplicaRequest, await json_object(request)).file
    claim = replica_claim(record)
    refusal = check_replica_claim(claim, ingester.options.max_file_bytes)
    return await reserve_for_bytes(ingester, principal, claim, refusal, replica=record)


async def adopt_local_replica(ingester: Ingester, request: web.Request) -> web.StreamResponse:
    """POST /api/v1/replicas/local {file, path}: copy a replica lying beneath a source root (one pass, verified)."""
    principal = caller(request)
    wanted = parse_body(LocalReplicaRequest, await json_object(request))
    who = Provenance(uploader=principal.account)
    outcome = await ingest_path(ingester, ingester.plain_transaction, replica_claim(wanted.file), wanted.path,
                                f"loc-{uuid.uuid4().hex}", who, origin=wanted.file)
    return await respond(ingester, outcome)


def replica_routes(ingester: Ingester) -> list[web.RouteDef]:
    """The replica routes: a site's transfer account (read-append) delivers copies of its files."""
    return [
        web.post("/api/v1/replicas", bound(ingester, announce_replica, Role.READ_APPEND)),
        web.post("/api/v1/replicas/local", bound(ingester, adopt_local_replica, Role.READ_APPEND)),
    ]
