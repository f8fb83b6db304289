"""HTTP ways in: the two-phase upload (announce, then PUT the bytes) and the local-path upload.

Replicas (services/ingest/replicas.py) announce through `reserve_for_bytes` and send their bytes with the same PUT.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from services.ingest.hygiene import StagingBusy
from services.ingest.ingester import Ingester, Minted, Outcome, Provenance, Staged, algorithms_for
from services.ingest.minting import (
    AlreadyMinted,
    Claim,
    Measured,
    Refusal,
    RefusalCode,
    check_claim,
    decide_before_copy,
)
from services.ingest.onepass import ChecksummingWriter, CopyResult, UploadTooLarge
from services.ingest.path_ingest import default_name, ingest_path
from services.ingest.repository import PendingUpload, file_document, find_file, find_upload
from services.ingest.staging import StagingArea
from services.ingest.stores import NoRoom
from shared.api.ingest import FileAnswer, MintAnswer, ReplicaFile, UploadTicket
from shared.auth import Principal, Role
from shared.errors import PermanentError
from shared.http.answers import model_response
from shared.http.auth import principal_of, requires
from shared.http.body import json_object, read_chunk
from shared.http.errors import HttpRefusal, json_error

log = structlog.get_logger()

READ_CHUNK = 1024 * 1024
WRITE_BYTES = 8 * 1024 * 1024  # written in a thread in chunks this large, while the next chunk is read
WHOLE_BODY_BYTES = 4 * 1024 * 1024  # a body up to this size is read whole, then written in one go


class BadUploadRequest(PermanentError):
    """A request body that is not what the endpoint takes (the message says which field and why)."""


def _field(body: dict[str, Any], key: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    value = body.get(key)
    if value is None:
        if required:
            raise BadUploadRequest(f"the request body lacks {key!r}")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BadUploadRequest(f"{key!r} has the wrong type ({type(value).__name__})")
    return value


def caller(request: web.Request) -> Principal:
    """The authenticated account of a request (`requires` let it in)."""
    principal = principal_of(request)
    if principal is None:  # `requires` has already refused anonymous callers
        raise web.HTTPUnauthorized(text="this endpoint needs a token")
    return principal


def refused(refusal: Refusal) -> web.Response:
    """A refusal as its HTTP error."""
    return json_error(refusal.http_status, refusal.code.value, refusal.reason)


async def respond(ingester: Ingester, outcome: Outcome) -> web.Response:
    """An ingest's outcome as its answer: 201/200 MintAnswer, or the refusal (507 no_store for no room)."""
    if isinstance(outcome, Refusal):
        return refused(outcome)
    if isinstance(outcome, NoRoom):
        return refused(no_store(outcome))
    document = outcome.document or await file_document(ingester.pool, outcome.name)
    if document is None:  # minted, so it exists: only a bug could get here
        raise RuntimeError(f"{outcome.name} was minted but cannot be read back")
    return model_response(MintAnswer(file=document, created=outcome.created), status=201 if outcome.created else 200)


def _upload_answer(upload: PendingUpload) -> UploadTicket:
    return UploadTicket(upload_id=upload.upload_id, url=f"/api/v1/uploads/{upload.upload_id}", method="PUT",
                        expires_at=upload.expires_at, size=upload.size, checksum=upload.checksum)


async def announce_upload(ingester: Ingester, request: web.Request) -> web.StreamResponse:
    """POST /api/v1/uploads {name, size, checksum, type, metadata?}: a place to PUT the bytes."""
    principal = caller(request)
    body = await json_object(request)
    size: int = _field(body, "size", int)
    claim = Claim(_field(body, "name", str), _field(body, "type", str), size, _field(body, "checksum", str))
    metadata = _field(body, "metadata", dict, required=False)
    refusal = check_claim(claim, ingester.options.max_file_bytes)
    return await reserve_for_bytes(ingester, principal, claim, refusal, metadata=metadata)


async def reserve_for_bytes(
    ingester: Ingester, principal: Principal, claim: Claim, refusal: Refusal | None, *,
    metadata: dict[str, Any] | None = None, replica: ReplicaFile | None = None,
) -> web.StreamResponse:
    """Phase one of a two-phase upload, or of a replica (its pending upload, of kind 'replica', keeps the origin's
    record): refuse the claim (`refusal`, from the checks that apply to it), return the file if it is here already
    with this content, refuse a name taken by other content, or reserve room and answer where to PUT the bytes."""
    tx = ingester.plain_transaction
    if refusal is not None:
        return refused(await ingester.refuse(tx, refusal, name=claim.name))
    verdict = decide_before_copy(claim, await find_file(ingester.pool, claim.name))
    if isinstance(verdict, AlreadyMinted):
        return await respond(ingester, Minted(claim.name, created=False))
    if isinstance(verdict, Refusal):
        return refused(await ingester.refuse(tx, verdict, name=claim.name))
    if claim.size is None:  # the claim checks of both kinds require a size
        raise BadUploadRequest(f"the claim of {claim.name} lacks its size")
    expires = datetime.now(UTC) + timedelta(seconds=ingester.options.upload_expiry_s)
    kind = "http" if replica is None else "replica"
    wanted = PendingUpload(uuid.uuid4().hex, kind, claim.name, claim.size, claim.checksum, claim.file_type, "",
                           principal.account, metadata, expires, replica=replica)
    # Uploads belong to their account: another account announcing the same file gets its own upload.
    reserved = await ingester.stores.reserve_upload(ingester.pool, wanted)
    if isinstance(reserved, NoRoom):
        return refused(await ingester.refuse(tx, no_store(reserved), name=claim.name))
    upload, created = reserved
    return model_response(_upload_answer(upload), status=201 if created else 200)


def no_store(room: NoRoom) -> Refusal:
    """No room as the refusal an HTTP caller gets (507)."""
    return Refusal(RefusalCode.NO_STORE, f"{room.reason}; then try again")


async def receive_upload(ingester: Ingester, request: web.Request) -> web.StreamResponse:
    """PUT /api/v1/uploads/{id}: stream the bytes into staging, verify them against the claim, mint.

    The pending upload lives until its file is minted, its claim is refused for good (a different file took the
    name) or it expires; a failed transfer (wrong size or checksum, no room at the mint, client gone, body too
    slow) leaves it as it was, to be sent again with the same id. Nothing of a failed transfer stays staged.
    """
    principal = caller(request)
    upload = await find_upload(ingester.pool, request.match_info["upload_id"])
    if upload is None:
        return json_error(404, "unknown_upload", "no pending upload has this id (expired, finished or never "
                          "announced): announce it again with POST /api/v1/uploads")
    if upload.uploader != principal.account and principal.role < Role.ADMIN:
        return json_error(403, "forbidden", f"upload {upload.upload_id} belongs to {upload.uploader}")
    if request.content_length is not None and request.content_length != upload.size:
        refusal = Refusal(RefusalCode.SIZE_MISMATCH, f"{upload.name}: announced {upload.size} bytes but the "
                          f"request carries {request.content_length}")
        return refused(await ingester.refuse(ingester.plain_transaction, refusal, name=upload.name,
                                              upload_id=upload.upload_id))
    try:
        async with ingester.locks.hold(upload.upload_id):
            outcome = await _stage_and_commit(request, ingester, upload)
    except StagingBusy:
        return json_error(409, "upload_in_progress", f"upload {upload.upload_id} is being sent right now; "
                          "wait for that request to finish")
    except HttpRefusal as e:
        if e.status != 408:
            raise
        log.info("upload_body_too_slow", upload_id=upload.upload_id, name=upload.name, error=str(e))
        raise HttpRefusal(408, e.code, f"{e}; upload {upload.upload_id} is still pending: send the whole body "
                          "again with the same id") from None
    if isinstance(outcome, NoRoom):
        outcome = await ingester.refuse(ingester.plain_transaction, no_store(outcome), name=upload.name,
                                        upload_id=upload.upload_id)
    return await respond(ingester, outcome)


async def _stage_and_commit(request: web.Request, ingester: Ingester, upload: PendingUpload) -> Outcome:
    claim = upload.claim
    area = ingester.stores.areas.get(upload.store)
    if area is None:
        return NoRoom(upload.size, f"store {upload.store!r} of upload {upload.upload_id} is no longer configured "
                      "here; announce the file again")
    algorithms = algorithms_for(claim)
    direct = ingester.options.direct_io
    body = _BodyReader(request)
    try:
        if request.content_length is not None and request.content_length <= WHOLE_BODY_BYTES:
            # A small body is read whole (zero bytes included) and staged in one thread hop (open, checksum,
            # write, fsync).
            chunks = await body.read_all(request.content_length)
            path, result = await asyncio.to_thread(_stage_whole, area, upload, chunks, algorithms, direct)
        else:
            path = await asyncio.to_thread(area.new_upload, upload.upload_id)
            writer = await asyncio.to_thread(ChecksummingWriter, path, algorithms, upload.size, direct=direct)
            await _receive(body, writer)
            result = await asyncio.to_thread(writer.finish)
    except UploadTooLarge:
        refusal = Refusal(RefusalCode.SIZE_MISMATCH, f"{upload.name}: more than the announced {upload.size} "
                          "bytes arrived; announce the right size")
        return await ingester.refuse(ingester.plain_transaction, refusal, name=upload.name, upload_id=upload.upload_id)
    staged = Staged(upload.upload_id, upload.store, path, Measured(result.size, result.checksums))
    who = Provenance(uploader=upload.uploader, metadata=upload.metadata)
    # A replica's bytes are verified against, and recorded as, the file its origin minted (upload.replica).
    return await ingester.commit_staged(ingester.plain_transaction, claim, staged, who, origin=upload.replica)


def _stage_whole(
    area: StagingArea, upload: PendingUpload, chunks: list[bytes], algorithms: tuple[str, ...], direct: bool
) -> tuple[Path, CopyResult]:
    path = area.new_upload(upload.upload_id)
    with ChecksummingWriter(path, algorithms, upload.size, direct=direct) as writer:
        _write_chunks(writer, chunks)
        return path, writer.finish()


class _BodyReader:
    """The upload body, read in chunks under the service's per-read timeout (408 `body_timeout`, the connection then
    closed: an idle client is let go), counting what arrived."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.received = 0

    async def chunk(self) -> bytes:
        """The next bytes of the body (at most READ_CHUNK); b"" at its end."""
        data = await read_chunk(self._request, READ_CHUNK)
        self.received += len(data)
        return data

    async def read_all(self, expected: int) -> list[bytes]:
        """The whole body, as the chunks that came; ConnectionResetError if it ends before `expected` bytes."""
        chunks = []
        while chunk := await self.chunk():
            chunks.append(chunk)
        if self.received < expected:
            raise ConnectionResetError(f"the body ended after {self.received} of {expected} bytes")
        return chunks


async def _receive(body: _BodyReader, writer: ChecksummingWriter) -> None:
    """Read the body in chunks and write them in a thread, reading the next chunks while some are written.

    Chunks are handed over as they came (a list, never joined): the event loop copies no byte of the body.
    """
    pending: asyncio.Future[None] | None = None
    chunks: list[bytes] = []
    gathered = 0
    try:
        while chunk := await body.chunk():
            chunks.append(chunk)
            gathered += len(chunk)
            if gathered >= WRITE_BYTES:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(asyncio.to_thread(_write_chunks, writer, chunks))
                chunks, gathered = [], 0
        if pending is not None:
            await pending
            pending = None
        if chunks:
            await asyncio.to_thread(_write_chunks, writer, chunks)
    except BaseException:
        if pending is not None:
            await asyncio.wait([pending])  # never close the file under a write still running in its thread
        writer.abort()
        raise


def _write_chunks(writer: ChecksummingWriter, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.write(chunk)


async def upload_local_path(ingester: Ingester, request: web.Request) -> web.StreamResponse:
    """POST /api/v1/uploads/local {path, name?, type, size?, checksum?, md5?}: the server copies the file."""
    principal = caller(request)
    body = await json_object(request)
    source = _field(body, "path", str)
    claim = Claim(_field(body, "name", str, required=False) or default_name(source), _field(body, "type", str),
                  _field(body, "size", int, required=False), _field(body, "checksum", str, required=False))
    who = Provenance(uploader=principal.account, metadata=_field(body, "metadata", dict, required=False))
    upload_id = f"loc-{uuid.uuid4().hex}"
    outcome = await ingest_path(ingester, ingester.plain_transaction, claim, source, upload_id, who,
                                want_md5=bool(_field(body, "md5", bool, required=False)))
    return await respond(ingester, outcome)


async def get_file(ingester: Ingester, request: web.Request) -> web.StreamResponse:
    """GET /api/v1/files/{name}: a file minted here and its local instances."""
    document = await file_document(ingester.pool, request.match_info["name"])
    if document is None:
        return json_error(404, "not_found", f"no file named {request.match_info['name']!r} was minted at this site")
    return model_response(FileAnswer(file=document))


IngestHandler = Callable[[Ingester, web.Request], Awaitable[web.StreamResponse]]


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bound(ingester: Ingester, handler: IngestHandler, role: Role) -> Route:
    """`handler` as a route of `ingester`, open to `role` and above."""
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(ingester, request)

    route.__name__ = handler.__name__
    return requires(role)(route)


def upload_routes(ingester: Ingester) -> list[web.RouteDef]:
    """The ingest service's HTTP routes: uploading needs read-append, reading read-only."""
    return [
        web.post("/api/v1/uploads", bound(ingester, announce_upload, Role.READ_APPEND)),
        web.post("/api/v1/uploads/local", bound(ingester, upload_local_path, Role.READ_APPEND)),
        web.put("/api/v1/uploads/{upload_id}", bound(ingester, receive_upload, Role.READ_APPEND)),
        web.get("/api/v1/files/{name}", bound(ingester, get_file, Role.READ_ONLY)),
    ]
