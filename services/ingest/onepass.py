"""Copy bytes and checksum them in the same pass: read → hash → write, then fsync.

Checksums are strings ``"<algorithm>:<hex>"``: ``xxh3-128:<32 hex>`` (the default, ~free in CPU) and
optionally ``md5:<32 hex>`` (for sites that still compare md5; it costs ~3× in throughput).
Everything here is synchronous and blocking: call it from asyncio with ``asyncio.to_thread``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import xxhash

from services.ingest.names import FileTooLarge

XXH3_128 = "xxh3-128"
MD5 = "md5"
SUPPORTED_ALGORITHMS = (XXH3_128, MD5)
DEFAULT_ALGORITHMS: tuple[str, ...] = (XXH3_128,)
DEFAULT_BUFSIZE = 8 * 1024 * 1024

_CHECKSUM_PATTERN = re.compile(r"(xxh3-128|md5):([0-9a-f]{32})")


class InvalidChecksum(ValueError):
    """A checksum string (or algorithm name) is not one obsflow understands."""


class CopyTargetExists(FileExistsError):
    """The destination of a copy already exists; copies never overwrite."""


class _Hasher(Protocol):
    def update(self, data: memoryview | bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class Checksum:
    """A parsed checksum: its algorithm and lowercase hex digest."""

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True)
class CopyResult:
    """What a one-pass copy wrote: its size in bytes and its checksums by algorithm."""

    size: int
    checksums: dict[str, str]

    @property
    def checksum(self) -> str:
        """The primary checksum (xxh3-128 when computed, else the first one)."""
        return self.checksums.get(XXH3_128) or next(iter(self.checksums.values()))


def parse_checksum(text: str) -> Checksum:
    """Parse ``"xxh3-128:<32 hex>"`` or ``"md5:<32 hex>"``; raise InvalidChecksum otherwise."""
    if not isinstance(text, str):
        raise InvalidChecksum(f"a checksum must be a string, got {type(text).__name__}")
    match = _CHECKSUM_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidChecksum(
            f"invalid checksum {text[:80]!r}: expected 'xxh3-128:<32 lowercase hex digits>' "
            "or 'md5:<32 lowercase hex digits>'"
        )
    return Checksum(algorithm=match.group(1), hexdigest=match.group(2))


def new_hasher(algorithm: str) -> _Hasher:
    """A fresh incremental hasher for one of SUPPORTED_ALGORITHMS."""
    if algorithm == XXH3_128:
        return xxhash.xxh3_128()
    if algorithm == MD5:
        return hashlib.md5(usedforsecurity=False)
    raise InvalidChecksum(
        f"unknown checksum algorithm {algorithm!r}: supported are {', '.join(SUPPORTED_ALGORITHMS)}"
    )


def _new_hashers(algorithms: Iterable[str]) -> dict[str, _Hasher]:
    hashers = {algorithm: new_hasher(algorithm) for algorithm in algorithms}
    if not hashers:
        raise InvalidChecksum(f"at least one checksum algorithm is needed: {', '.join(SUPPORTED_ALGORITHMS)}")
    return hashers


def _checksums(hashers: dict[str, _Hasher]) -> dict[str, str]:
    return {algorithm: f"{algorithm}:{hasher.hexdigest()}" for algorithm, hasher in hashers.items()}


def _open_new_file(dst: Path) -> int:
    try:
        return os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    except FileExistsError as e:
        raise CopyTargetExists(f"refusing to overwrite {dst}: copies always go to a new path") from e


_buffers = threading.local()
_SYNC_FILE_RANGE_WRITE = 2
_EARLY_WRITEBACK_BYTES = 8 * 1024 * 1024


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    function = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


def _start_writeback(fd: int, offset: int, length: int) -> None:
    # Start writing this chunk to disk now (asynchronously) so the final fsync has little left to wait
    # for and writeback overlaps the reading of the next chunk, as it does behind `cp`.
    start = _sync_file_range()
    if start is not None:
        start(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _reusable_buffer(bufsize: int) -> memoryview:
    # One buffer per thread, reused across calls: allocating (and page-faulting) 8 MiB per file would
    # cost more than copying a small file.
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) != bufsize:
        buffer = bytearray(bufsize)
        _buffers.buffer = buffer
    return memoryview(buffer)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def fsync_directory(path: Path) -> None:
    """fsync a directory so the names created or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync one file's data (for callers that copied with fsync=False and sync in a batch)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_and_checksum(
    src: Path,
    dst: Path,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    bufsize: int = DEFAULT_BUFSIZE,
    *,
    fsync: bool = True,
) -> CopyResult:
    """Copy src to a new file dst in one pass, computing checksums on the way, then fsync dst.

    dst must not exist (CopyTargetExists). On any error the partial dst is removed. The directory entry
    of dst is not fsynced here: the caller syncs the directory once per batch (see fsync_directory).
    """
    hashers = _new_hashers(algorithms)
    updates = [hasher.update for hasher in hashers.values()]
    view = _reusable_buffer(bufsize)
    size = 0
    with open(src, "rb", buffering=0) as source:
        fd = _open_new_file(dst)
        try:
            _advise_sequential(source.fileno())
            while True:
                count = source.readinto(view)
                if not count:
                    break
                chunk = view[:count]
                for update in updates:
                    update(chunk)
                _write_all(fd, chunk)
                if count == len(view):
                    # Only full chunks: a short one is the file's last (or only: a small file), which the
                    # final fsync writes anyway; a syscall per small file buys nothing there.
                    _start_writeback(fd, size, count)
                size += count
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            dst.unlink(missing_ok=True)
            raise
        os.close(fd)
    return CopyResult(size=size, checksums=_checksums(hashers))


def _advise_sequential(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


def read_checksums(
    path: Path, algorithms: Sequence[str] = DEFAULT_ALGORITHMS, bufsize: int = DEFAULT_BUFSIZE
) -> CopyResult:
    """Read a file once and return its size and checksums (verification; nothing is written)."""
    hashers = _new_hashers(algorithms)
    updates = [hasher.update for hasher in hashers.values()]
    view = _reusable_buffer(bufsize)
    size = 0
    with open(path, "rb", buffering=0) as source:
        _advise_sequential(source.fileno())
        while count := source.readinto(view):
            chunk = view[:count]
            for update in updates:
                update(chunk)
            size += count
    return CopyResult(size=size, checksums=_checksums(hashers))


def checksum_file(path: Path, algorithm: str = XXH3_128, bufsize: int = DEFAULT_BUFSIZE) -> str:
    """Read a file once and return its checksum string, e.g. ``"xxh3-128:<hex>"``."""
    return read_checksums(path, (algorithm,), bufsize).checksums[algorithm]


class ChecksummingWriter:
    """Write a stream (an HTTP upload) to a new file, checksumming each chunk as it is written.

    ``write()`` each chunk, then ``finish()`` (fsync, returns the CopyResult) or ``abort()`` (removes the
    partial file). Used as a context manager, an exception inside the block aborts.
    """

    def __init__(
        self, dst: Path, algorithms: Sequence[str] = DEFAULT_ALGORITHMS, max_bytes: int | None = None
    ) -> None:
        self._dst = Path(dst)
        self._hashers = _new_hashers(algorithms)
        self._max_bytes = max_bytes
        self._size = 0
        self._written_back = 0
        self._fd: int | None = _open_new_file(self._dst)

    @property
    def path(self) -> Path:
        """Where the bytes are being written."""
        return self._dst

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Checksum and write one chunk; raise UploadTooLarge past max_bytes (the file is then removed)."""
        fd = self._require_open()
        chunk = memoryview(data).cast("B")
        if self._max_bytes is not None and self._size + len(chunk) > self._max_bytes:
            self.abort()
            raise UploadTooLarge(
                f"upload to {self._dst.name} exceeds the announced/allowed size of {self._max_bytes} bytes"
            )
        for hasher in self._hashers.values():
            hasher.update(chunk)
        _write_all(fd, chunk)
        self._size += len(chunk)
        if self._size - self._written_back >= _EARLY_WRITEBACK_BYTES:
            _start_writeback(fd, self._written_back, self._size - self._written_back)
            self._written_back = self._size

    def finish(self) -> CopyResult:
        """fsync and close the file; return its size and checksums."""
        fd = self._require_open()
        try:
            os.fsync(fd)
        except BaseException:
            self.abort()
            raise
        os.close(fd)
        self._fd = None
        return CopyResult(size=self._size, checksums=_checksums(self._hashers))

    def abort(self) -> None:
        """Close and remove the partial file; safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._dst.unlink(missing_ok=True)

    def _require_open(self) -> int:
        if self._fd is None:
            raise WriterClosed(f"the writer for {self._dst} is already finished or aborted")
        return self._fd

    def __enter__(self) -> ChecksummingWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or self._fd is not None:
            # Leaving the block without finish() means the upload did not complete: keep nothing.
            self.abort()


class UploadTooLarge(FileTooLarge):
    """A streamed upload carried more bytes than allowed."""


class WriterClosed(RuntimeError):
    """write()/finish() was called after finish() or abort()."""
