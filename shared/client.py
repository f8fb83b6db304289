"""The Python client of a site's HTTP APIs: uploads (two-phase, streamed, or local-path) and file look-ups.

    async with ObsflowClient("http://127.0.0.1:8470", token) as client:
        document = await client.upload(Path("zen.2459122.30000.sum.uvh5"), file_type="uvh5")
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import xxhash

from shared.errors import ObsflowError, TransientError

CHUNK = 4 * 1024 * 1024
PROGRESS_FROM_BYTES = 64 * 1024 * 1024


class ClientError(ObsflowError):
    """The server refused a request; `code` is its stable error word, the message says what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code


class ServerUnavailable(TransientError):
    """The server could not be reached or answered 503."""


@dataclass(frozen=True)
class Measured:
    """A local file's size and checksums; `body` holds its bytes when it fits in one chunk (sent from memory)."""

    size: int
    checksum: str
    md5: str | None
    body: bytes | None


def file_checksums(path: Path, md5: bool = False) -> Measured:
    """A file's size, xxh3-128 and (if asked) md5 checksums, in one read; a small file's bytes kept (blocking)."""
    xxh, digest = xxhash.xxh3_128(), hashlib.md5(usedforsecurity=False) if md5 else None
    size = 0
    first = b""
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            xxh.update(chunk)
            if digest is not None:
                digest.update(chunk)
            first = chunk if size == 0 else b""
            size += len(chunk)
    return Measured(size, f"xxh3-128:{xxh.hexdigest()}", f"md5:{digest.hexdigest()}" if digest else None,
                    first if len(first) == size else None)


class Progress:
    """A one-line progress bar on stderr for large transfers (silent for small ones)."""

    def __init__(self, label: str, total: int, *, stream: Any = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self._stream = stream or sys.stderr
        self._enabled = total >= PROGRESS_FROM_BYTES
        self._started = self._shown = time.monotonic()

    def advance(self, count: int) -> None:
        """Count `count` more bytes sent; redraw at most 5 times a second."""
        self.done += count
        now = time.monotonic()
        if self._enabled and (now - self._shown >= 0.2 or self.done >= self.total):
            self._shown = now
            rate = self.done / max(now - self._started, 1e-6) / 1e6
            share = 100 * self.done / max(self.total, 1)
            self._stream.write(f"\r{self.label}: {share:5.1f}% of {self.total / 1e6:,.0f} MB, {rate:,.0f} MB/s")
            if self.done >= self.total:
                self._stream.write("\n")
            self._stream.flush()


class ObsflowClient:
    """Calls one site's ingest API with a bearer token."""

    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 3600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ObsflowClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("use the client as `async with ObsflowClient(...) as client`")
        try:
            async with self._session.request(method, f"{self.base_url}{path}", **kwargs) as response:
                body = await response.json(content_type=None)
                status = response.status
        except aiohttp.ClientConnectionError as e:
            raise ServerUnavailable(f"cannot reach {self.base_url}: {e}") from e
        if status >= 400:
            error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            if status == 503:
                raise ServerUnavailable(error.get("message", "the server is unavailable"))
            raise ClientError(status, error.get("code", "error"), error.get("message", f"HTTP {status}"))
        return body if isinstance(body, dict) else {}

    async def announce(self, name: str, size: int, checksum: str, file_type: str,
                       metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Phase one: announce a file; returns {upload_id, url, method} or, if it exists already, {file}."""
        body = {"name": name, "size": size, "checksum": checksum, "type": file_type, "metadata": metadata}
        return await self._call("POST", "/api/v1/uploads", json=body)

    async def send(self, url: str, path: Path, size: int, progress: Progress | None = None,
                   body: bytes | None = None) -> dict[str, Any]:
        """Phase two: stream a file's bytes (or send `body`, its bytes read already) to the upload URL;
        returns {file, created}."""
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        data = body if body is not None else _read_chunks(path, progress.advance if progress else None)
        return await self._call("PUT", url, data=data, headers=headers)

    async def upload(self, path: Path, *, file_type: str, name: str | None = None, md5: bool = False,
                     metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Checksum a file, announce it and stream it (with a progress bar if large); return the file."""
        measured = await asyncio.to_thread(file_checksums, path, md5)
        announced = await self.announce(name or path.name, measured.size, measured.md5 or measured.checksum,
                                        file_type, metadata)
        if "file" in announced:
            return announced["file"]  # already minted with these bytes: nothing to send
        progress = Progress(name or path.name, measured.size)
        return (await self.send(announced["url"], path, measured.size, progress, measured.body))["file"]

    async def upload_local(self, path: Path, *, file_type: str, name: str | None = None,
                           checksum: str | None = None, md5: bool = False) -> dict[str, Any]:
        """Ask the server to copy `path` (a file or directory on a filesystem it shares with us)."""
        body = {"path": _absolute(path), "name": name, "type": file_type, "checksum": checksum, "md5": md5}
        return (await self._call("POST", "/api/v1/uploads/local", json=body))["file"]

    async def file(self, name: str) -> dict[str, Any]:
        """A file minted at this site and its local instances."""
        return (await self._call("GET", f"/api/v1/files/{name}"))["file"]


def job_provenance(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """`produced_by` for a file uploaded from inside a scheduler job (its OBSFLOW_RUN_ID ... variables), else None."""
    env = os.environ if env is None else env
    if not env.get("OBSFLOW_RUN_ID"):
        return None
    try:
        inputs = json.loads(env.get("OBSFLOW_JOB_INPUTS", "[]"))
    except ValueError:
        inputs = []
    return {
        "run": env["OBSFLOW_RUN_ID"], "job": env.get("OBSFLOW_JOB_ID"), "workflow": env.get("OBSFLOW_WORKFLOW"),
        "attempt": env.get("OBSFLOW_ATTEMPT"), "inputs": inputs,
    }


def _absolute(path: Path) -> str:
    return os.path.abspath(path)  # the server resolves nothing relative to our working directory


async def _read_chunks(path: Path, advance: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    source = await asyncio.to_thread(open, path, "rb", buffering=0)
    try:
        while chunk := await asyncio.to_thread(source.read, CHUNK):
            if advance is not None:
                advance(len(chunk))
            yield chunk
    finally:
        source.close()
