"""Uploads: the two-phase upload (announce, then stream the bytes) and the local-path upload, with checksums
computed in one read and progress reported as it goes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import xxhash
from pydantic import TypeAdapter

from shared.api.ingest import FileAnswer, IngestedFile, MintAnswer, UploadTicket
from shared.client.errors import LocalFileError
from shared.client.transport import Transport

CHUNK = 4 * 1024 * 1024
_ANNOUNCED: TypeAdapter[UploadTicket | MintAnswer] = TypeAdapter(UploadTicket | MintAnswer)
# (phase, bytes done, bytes in all): phase "checksum" while the file is read for its checksum, "send" while its
# bytes go to the server. Called from a worker thread during the checksum.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Measured:
    """A local file's size and checksums; `body` holds its bytes when it fits in one chunk (sent from memory)."""

    size: int
    checksum: str
    md5: str | None
    body: bytes | None


def file_checksums(path: Path, md5: bool = False, progress: Progress | None = None) -> Measured:
    """A file's size, xxh3-128 and (if asked) md5 checksums, in one read; a small file's bytes kept (blocking)."""
    xxh, digest = xxhash.xxh3_128(), hashlib.md5(usedforsecurity=False) if md5 else None
    size = 0
    first = b""
    with _open(path) as f:
        total = os.fstat(f.fileno()).st_size
        while chunk := f.read(CHUNK):
            xxh.update(chunk)
            if digest is not None:
                digest.update(chunk)
            first = chunk if size == 0 else b""
            size += len(chunk)
            if progress is not None:
                progress("checksum", size, max(total, size))
    return Measured(size, f"xxh3-128:{xxh.hexdigest()}", f"md5:{digest.hexdigest()}" if digest else None,
                    first if len(first) == size else None)


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


class UploadCalls:
    """The ingest service's calls."""

    _transport: Transport

    @property
    def base_url(self) -> str:
        """The ingest service's base URL (upload tickets' URLs are paths on it)."""
        return self._transport.site.ingest

    async def announce(self, name: str, size: int, checksum: str, file_type: str,
                       metadata: dict[str, Any] | None = None) -> UploadTicket | MintAnswer:
        """Phase one: announce a file; where to PUT its bytes (an UploadTicket) or, if a file of that name and
        content exists already, that file (a MintAnswer with created False)."""
        body = {"name": name, "size": size, "checksum": checksum, "type": file_type, "metadata": metadata}
        return await self._transport.call("ingest", "POST", "/uploads", _ANNOUNCED, json=body)

    async def send(self, url: str, path: Path, size: int, progress: Progress | None = None,
                   body: bytes | None = None) -> MintAnswer:
        """Phase two: stream a file's bytes (or send `body`, its bytes read already) to the ticket's URL."""
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        data = body if body is not None else _read_chunks(path, size, progress)
        answer = await self._transport.call("ingest", "PUT", url, MintAnswer, data=data, headers=headers,
                                            timeout=self._transport.transfer_timeout)
        if body is not None and progress is not None:
            progress("send", size, size)
        return answer

    async def upload(self, path: Path, *, file_type: str, name: str | None = None, md5: bool = False,
                     metadata: dict[str, Any] | None = None, progress: Progress | None = None) -> IngestedFile:
        """Checksum a file, announce it and stream it; the minted file (the existing one if it was minted already
        with these bytes: nothing is sent then). LocalFileError if `path` cannot be read."""
        measured = await asyncio.to_thread(file_checksums, path, md5, progress)
        announced = await self.announce(name or path.name, measured.size, measured.md5 or measured.checksum,
                                        file_type, metadata)
        if isinstance(announced, MintAnswer):
            return announced.file
        return (await self.send(announced.url, path, measured.size, progress, measured.body)).file

    async def upload_local(self, path: Path, *, file_type: str, name: str | None = None,
                           checksum: str | None = None, md5: bool = False,
                           metadata: dict[str, Any] | None = None) -> IngestedFile:
        """Ask the server to copy `path` (a file or directory on a filesystem it shares with us, beneath one of its
        source roots); the minted file."""
        body = {"path": _absolute(path), "name": name, "type": file_type, "checksum": checksum, "md5": md5,
                "metadata": metadata}  # absolute: the server resolves nothing relative to our working directory
        return (await self._transport.call("ingest", "POST", "/uploads/local", MintAnswer, json=body,
                                           timeout=self._transport.transfer_timeout)).file

    async def file(self, name: str) -> IngestedFile:
        """A file minted at this site and its local instances (the catalog's `catalog_file` knows every site's)."""
        return (await self._transport.call("ingest", "GET", f"/files/{quote(name, safe='')}", FileAnswer)).file


def _open(path: Path) -> BinaryIO:
    """`open(path, "rb")`, or a LocalFileError naming the path and what to do."""
    try:
        return open(path, "rb", buffering=0)  # noqa: SIM115  (the caller closes it)
    except IsADirectoryError:
        raise LocalFileError(f"{path} is a directory: upload it with --local (the server copies it from beneath "
                             "its source roots)") from None
    except OSError as e:
        raise LocalFileError(f"cannot read {path}: {e.strerror or e}; check the path") from None


def _absolute(path: Path) -> str:
    return os.path.abspath(path)  # a string operation (and getcwd): nothing that blocks


async def _read_chunks(path: Path, size: int, progress: Progress | None) -> AsyncIterator[bytes]:
    source = await asyncio.to_thread(_open, path)
    sent = 0
    try:
        while chunk := await asyncio.to_thread(source.read, CHUNK):
            sent += len(chunk)
            if progress is not None:
                progress("send", sent, max(size, sent))
            yield chunk
    finally:
        source.close()
