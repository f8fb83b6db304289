"""Copy bytes and checksum them in the same pass: read → hash → write, then fsync.

Checksums are strings ``"<algorithm>:<hex>"``: ``xxh3-128:<32 hex>`` (the default, ~free in CPU) and
optionally ``md5:<32 hex>`` (for sites that still compare md5; it costs ~3× in throughput).
Everything here is synchronous and blocking: call it from asyncio with ``asyncio.to_thread``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import hashlib
import io
import mmap
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
    # One page-aligned buffer per thread (O_DIRECT needs aligned memory), reused across calls: allocating
    # (and page-faulting) 8 MiB per file would cost more than copying a small file.
    buffer: mmap.mmap | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) != bufsize:
        buffer = mmap.mmap(-1, bufsize)
        _buffers.buffer = buffer
    return memoryview(buffer)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


# Direct I/O: whole blocks go from our buffer straight to the disk. Writing through the page cache instead
# made the kernel copy every byte into freshly allocated cache pages, which cost 1-4 ms of system time per MiB
# on the VMs we run on (O_DIRECT: ~0.6 ms), and caching what was just ingested helps nobody. Offsets, lengths
# and memory must be aligned to the device's logical block; 4 KiB satisfies every common device.
DIRECT_BLOCK = 4096


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for `fd`; False where the filesystem does no direct I/O (older tmpfs, some FUSE)."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | direct if on else flags & ~direct)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        return False
    return on


def _write_blocks(fd: int, data: memoryview, direct: bool) -> bool:
    """Write `data` (block-aligned in memory and in the file) at the file's offset: its whole blocks directly
    when `direct`, the rest through the page cache. Returns whether `fd` is still direct."""
    if direct:
        whole = len(data) - len(data) % DIRECT_BLOCK
        written = 0
        try:
            while written < whole:
                written += os.write(fd, data[written:whole])
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            # Refused after all (an unusual device block size): the rest goes through the page cache.
        data = data[written:]
        if not data:
            return True
        direct = _set_direct(fd, False)
    _write_all(fd, data)
    return direct


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


def _open_source(src: Path | int) -> io.FileIO:
    """A binary reader of src: a path, or a descriptor opened by the caller (read from its start, left open)."""
    if isinstance(src, int):
        os.lseek(src, 0, os.SEEK_SET)
        return io.FileIO(src, "rb", closefd=False)
    return io.FileIO(src, "rb")


def copy_and_checksum(
    src: Path | int,
    dst: Path,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    bufsize: int = DEFAULT_BUFSIZE,
    *,
    fsync: bool = True,
    direct: bool = True,
) -> CopyResult:
    """Copy src (a path, or a descriptor to read through) to a new file dst in one pass, checksumming, then fsync dst.

    With `direct` (where the filesystem allows it) whole blocks are written with O_DIRECT (see DIRECT_BLOCK).

    dst must not exist (CopyTargetExists). On any error the partial dst is removed. The directory entry
    of dst is not fsynced here: the caller syncs the directory once per batch (see fsync_directory).
    """
    hashers = _new_hashers(algorithms)
    updates = [hasher.update for hasher in hashers.values()]
    view = _reusable_buffer(bufsize)
    size = 0
    with _open_source(src) as source:
        fd = _open_new_file(dst)
        try:
            _advise_sequential(source.fileno())
            direct = _set_direct(fd, direct)
            while True:
                count = source.readinto(view)
                if not count:
                    break
                chunk = view[:count]
                for update in updates:
                    update(chunk)
                direct = _write_blocks(fd, chunk, direct)
                if count == len(view) and not direct:
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
    path: Path | int, algorithms: Sequence[str] = DEFAULT_ALGORITHMS, bufsize: int = DEFAULT_BUFSIZE
) -> CopyResult:
    """Read a file (a path or a descriptor) once and return its size and checksums (nothing is written)."""
    hashers = _new_hashers(algorithms)
    updates = [hasher.update for hasher in hashers.values()]
    view = _reusable_buffer(bufsize)
    size = 0
    with _open_source(path) as source:
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


class _AlignedBuffers:
    """Page-aligned buffers for writers that live across thread hops (an HTTP upload), reused; at most
    `keep` wait idle (an untouched part of one costs no memory: a 1 MiB upload touches 1 MiB of it)."""

    def __init__(self, size: int, keep: int) -> None:
        self._size = size
        self._keep = keep
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return mmap.mmap(-1, self._size)

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(buffer)
                return
        buffer.close()


_WRITER_BUFFERS = _AlignedBuffers(DEFAULT_BUFSIZE, keep=16)


class ChecksummingWriter:
    """Write a stream (an HTTP upload) to a new file, checksumming each chunk as it is written.

    ``write()`` each chunk, then ``finish()`` (fsync, returns the CopyResult) or ``abort()`` (removes the
    partial file). Used as a context manager, an exception inside the block aborts. Chunks are gathered in
    an aligned buffer and written a buffer at a time, with O_DIRECT where the filesystem allows it.
    """

    def __init__(
        self, dst: Path, algorithms: Sequence[str] = DEFAULT_ALGORITHMS, max_bytes: int | None = None,
        *, direct: bool = True,
    ) -> None:
        self._dst = Path(dst)
        self._hashers = _new_hashers(algorithms)
        self._max_bytes = max_bytes
        self._size = 0
        self._fd: int | None = _open_new_file(self._dst)
        self._direct = _set_direct(self._fd, direct)
        self._buffer: mmap.mmap | None = _WRITER_BUFFERS.take()
        self._filled = 0
        self._flushed = 0

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
        self._require_open()
        chunk = memoryview(data).cast("B")
        if self._max_bytes is not None and self._size + len(chunk) > self._max_bytes:
            self.abort()
            raise UploadTooLarge(
                f"upload to {self._dst.name} exceeds the announced/allowed size of {self._max_bytes} bytes"
            )
        for hasher in self._hashers.values():
            hasher.update(chunk)
        self._size += len(chunk)
        assert self._buffer is not None  # open (checked above) means the buffer is held
        while chunk:
            taken = min(len(self._buffer) - self._filled, len(chunk))
            self._buffer[self._filled : self._filled + taken] = chunk[:taken]
            self._filled += taken
            chunk = chunk[taken:]
            if self._filled == len(self._buffer):
                self._flush()

    def _flush(self) -> None:
        fd = self._require_open()
        assert self._buffer is not None
        self._direct = _write_blocks(fd, memoryview(self._buffer)[: self._filled], self._direct)
        if not self._direct:
            _start_writeback(fd, self._flushed, self._filled)  # see copy_and_checksum
        self._flushed += self._filled
        self._filled = 0

    def finish(self) -> CopyResult:
        """Write what is gathered, fsync and close the file; return its size and checksums."""
        fd = self._require_open()
        try:
            if self._filled:
                self._flush()
            os.fsync(fd)
        except BaseException:
            self.abort()
            raise
        self._close()
        return CopyResult(size=self._size, checksums=_checksums(self._hashers))

    def abort(self) -> None:
        """Close and remove the partial file; safe to call twice."""
        if self._fd is not None:
            self._close()
            self._dst.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._buffer is not None:
            _WRITER_BUFFERS.give(self._buffer)
            self._buffer = None

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
