"""Replicas: how a sending site's transfer service hands a peer's ingest a copy of a file, and what the peer said.

    result = await push_replica(session, peer.url, token, record, instance_path, progress=cap.spend)

The claim goes first (`POST /api/v1/replicas`): a peer that holds the file already with that checksum says so and no
byte is sent (`ReplicaResult.already`). Otherwise the instance's bytes are streamed to the ticket's URL from disk,
in chunks read in a thread (never whole in memory), `progress(nbytes)` awaited before each is sent (a bandwidth cap
sleeps there). The peer verifies every byte against the record before it records anything.

What can go wrong is typed, so a transfer knows whether to try again:
- `ReplicaRefused` (the peer's refusal: `code`, `message`, `status`): `retryable` for corruption in transit (422) and
  a full peer (507, a pending upload gone or busy); permanent for a name held with other content (409), an invalid
  claim (400) or a file above the peer's limit (413);
- `PeerNotAuthorized` (401/403): the peer refused our token; it names the peer;
- `PeerUnavailable` (a `shared.errors.TransientError`): the peer unreachable, timing out, or answering 5xx;
- `LocalFileError`: this site's own instance cannot be read or is not the size that was minted.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp
from pydantic import TypeAdapter, ValidationError

from shared.api.ingest import IngestedFile, MintAnswer, ReplicaFile, UploadTicket
from shared.client.errors import ClientError, LocalFileError, ServerUnavailable
from shared.client.transport import Transport

T = TypeVar("T")
CHUNK_BYTES = 4 * 1024 * 1024
API_TIMEOUT_S = 60.0  # a claim's answer
TRANSFER_TIMEOUT_S = 3600.0  # the longest silence while the bytes are sent and then verified and committed
Progress = Callable[[int], Awaitable[None]]
Opener = Callable[[], BinaryIO]
_ANNOUNCED: TypeAdapter[UploadTicket | MintAnswer] = TypeAdapter(UploadTicket | MintAnswer)
_MINTED: TypeAdapter[MintAnswer] = TypeAdapter(MintAnswer)
# Refusals that another attempt can get past: bytes damaged in transit, a full peer, a pending upload that expired
# or is being sent by another request right now.
_RETRYABLE_CODES = frozenset({"size_mismatch", "checksum_mismatch", "no_store", "unknown_upload", "upload_in_progress"})


@dataclass(frozen=True)
class ReplicaResult:
    """The peer holds a verified instance of the file: delivered by this call, or `already` held before it."""

    name: str
    file: IngestedFile  # the peer's record of it, with its instances there
    already: bool
    bytes_sent: int

    @property
    def delivered(self) -> bool:
        """True when this call's bytes became the peer's instance."""
        return not self.already


class ReplicaRefused(ClientError):
    """The peer refused the replica: its stable `code`, its `message` (what to do) and the HTTP `status`."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(status, code, message)

    @property
    def retryable(self) -> bool:
        """Whether sending it again can succeed (damaged in transit, the peer full) or never will (a name held with
        other content, an invalid claim, a file too large for the peer)."""
        return self.status in (422, 507) or self.code in _RETRYABLE_CODES


class PeerNotAuthorized(ClientError):
    """The peer refused our token (401) or its account's role (403): fix the peer's token or account, not the file."""


class PeerUnavailable(ServerUnavailable):
    """The peer's ingest could not be reached, timed out or failed (5xx): try again later."""


async def push_replica(
    session_or_transport: aiohttp.ClientSession | Transport, base_url: str, token: str, record: ReplicaFile,
    source: Path | Opener, *, progress: Progress | None = None, chunk_bytes: int = CHUNK_BYTES,
    transfer_timeout_s: float = TRANSFER_TIMEOUT_S, peer: str | None = None,
) -> ReplicaResult:
    """Give the peer at `base_url` (its ingest service) a copy of `record`'s file, read from `source` (this site's
    verified instance: a path, or a function that opens it, e.g. beneath its store's root without following links;
    called in a thread, only once the peer wants the bytes); `peer` names it in errors (default: the URL)."""
    call = _PeerCall(session_or_transport, base_url, token, peer)
    status, body = await call.send("POST", "/api/v1/replicas", json={"file": record.model_dump(mode="json")},
                                   timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S, sock_connect=10))
    answer = call.parse(_ANNOUNCED, status, body)
    if isinstance(answer, MintAnswer):
        return ReplicaResult(record.name, answer.file, already=True, bytes_sent=0)
    instance = await asyncio.to_thread(_open_instance, source, record)
    chunks = _Chunks(instance, record.size, chunk_bytes, progress)
    try:
        status, body = await call.send(
            "PUT", answer.url, data=chunks.read(), local=chunks,
            headers={"Content-Length": str(record.size), "Content-Type": "application/octet-stream"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=transfer_timeout_s),
        )
    finally:
        await asyncio.to_thread(instance.close)
    minted = call.parse(_MINTED, status, body)
    return ReplicaResult(record.name, minted.file, already=not minted.created, bytes_sent=chunks.sent)


async def adopt_local_replica(
    session_or_transport: aiohttp.ClientSession | Transport, base_url: str, token: str, record: ReplicaFile,
    path: Path | str, *, transfer_timeout_s: float = TRANSFER_TIMEOUT_S, peer: str | None = None,
) -> ReplicaResult:
    """Ask the peer to adopt a copy of `record`'s file that lies at `path` on its own disks, beneath one of its
    source roots (a sneaker drive, a shared filesystem): it copies and verifies it there; no byte goes over HTTP."""
    call = _PeerCall(session_or_transport, base_url, token, peer)
    status, body = await call.send(
        "POST", "/api/v1/replicas/local", json={"file": record.model_dump(mode="json"), "path": str(path)},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=transfer_timeout_s),
    )
    minted = call.parse(_MINTED, status, body)
    return ReplicaResult(record.name, minted.file, already=not minted.created, bytes_sent=0)


def _open_instance(source: Path | Opener, record: ReplicaFile) -> BinaryIO:
    """This site's instance, opened, after checking it is the size that was minted (blocking)."""
    where = "its store" if callable(source) else source
    try:
        instance = source() if callable(source) else open(source, "rb", buffering=0)  # noqa: SIM115 (caller closes)
    except IsADirectoryError as e:
        raise LocalFileError(f"the instance of {record.name} at {where} is a directory: HTTP carries single files; "
                             "have the peer adopt a copy beneath its source roots (adopt_local_replica)") from e
    except OSError as e:
        raise LocalFileError(f"cannot read the instance of {record.name} at {where}: {e.strerror or e}; is its store "
                             "mounted?") from e
    size = os.fstat(instance.fileno()).st_size
    if size != record.size:
        instance.close()
        raise LocalFileError(f"the instance of {record.name} at {where} holds {size} bytes, but {record.size} were "
                             "minted: it is damaged; send another instance and check this one")
    return instance


class _Chunks:
    """The instance's bytes as the request body: read in a thread chunk by chunk, at most the minted size."""

    def __init__(self, instance: BinaryIO, size: int, chunk_bytes: int, progress: Progress | None) -> None:
        self._instance = instance
        self._size = size
        self._chunk_bytes = max(1, chunk_bytes)
        self._progress = progress
        self.sent = 0
        self.failure: OSError | None = None  # a read of ours that failed (not the peer's fault)

    async def read(self) -> AsyncIterator[bytes]:
        while self.sent < self._size:
            try:
                chunk = await asyncio.to_thread(self._instance.read, min(self._chunk_bytes, self._size - self.sent))
            except OSError as e:
                self.failure = e
                raise
            if not chunk:
                self.failure = OSError(f"the file ended after {self.sent} of {self._size} bytes")
                raise self.failure
            if self._progress is not None:
                # Before the bytes leave: the request's answer may come while its body's writer still runs, and the
                # transfer would then be over without the cap's wait for its last chunk.
                await self._progress(len(chunk))
            yield chunk
            self.sent += len(chunk)


class _PeerCall:
    """Requests to one peer's ingest service with our token, answers and refusals read as this module's types."""

    def __init__(self, session_or_transport: aiohttp.ClientSession | Transport, base_url: str, token: str,
                 peer: str | None) -> None:
        self._session = (session_or_transport if isinstance(session_or_transport, aiohttp.ClientSession)
                         else session_or_transport.session)
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self.peer = peer or self._base

    async def send(self, method: str, path: str, *, local: _Chunks | None = None, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> tuple[int, Any]:
        """The peer's status and JSON answer; PeerUnavailable when it cannot be had, refusals raised as typed."""
        url = f"{self._base}{path}"
        try:
            async with self._session.request(method, url, headers={**self._headers, **(headers or {})},
                                             **kwargs) as response:
                status, text = response.status, await response.text(errors="replace")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            if local is not None and local.failure is not None:
                raise LocalFileError(f"reading this site's instance failed after {local.sent} bytes: "
                                     f"{local.failure}; check its store") from local.failure
            raise PeerUnavailable(f"cannot have {method} {path} answered by the ingest service of {self.peer} "
                                  f"({e.__class__.__name__}: {e}); it will be tried again") from e
        body = _json(text)
        if status >= 400:
            raise _refusal(self.peer, status, body, text)
        return status, body

    def parse(self, adapter: TypeAdapter[T], status: int, body: Any) -> T:
        """The answer as the API model, or a ClientError saying the peer answered something else."""
        try:
            return adapter.validate_python(body)
        except ValidationError as e:
            raise ClientError(status, "unexpected_answer", f"the ingest service of {self.peer} answered with a body "
                              f"this client cannot read ({e.error_count()} problems); are both sites of the same "
                              "obsflow version?") from e


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _refusal(peer: str, status: int, body: Any, text: str) -> Exception:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": "http_error", "message": f"HTTP {status}" + (f": {text[:200]}" if text else "")}
    code, message = str(error.get("code", "error")), str(error.get("message", f"HTTP {status}"))
    if status in (401, 403):
        return PeerNotAuthorized(status, code, f"the ingest service of {peer} refused our token: {message}; check "
                                 "the token this site holds for it ([[peers]]) and that its account may append "
                                 "(read-append)")
    if status in (408, 429) or (status >= 500 and status != 507):
        return PeerUnavailable(f"the ingest service of {peer} answered {status} {code}: {message}", status=status,
                               code=code)
    return ReplicaRefused(code, f"the ingest service of {peer} refused the replica: {message}", status)


__all__ = ["PeerNotAuthorized", "PeerUnavailable", "Progress", "ReplicaRefused", "ReplicaResult",
           "adopt_local_replica", "push_replica"]
