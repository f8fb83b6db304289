"""A directory is one file: its reproducible digest, and a copy that computes it in one pass per file.

The digest (format version 1) is ``"xxh3-128:<hex>"`` of this byte string, the *manifest*::

    b"obsflow-tree-digest-v1\\n"
    then, for every entry below the root (the root itself is not listed), in ascending bytewise order of
    its relative POSIX path encoded with os.fsencode (UTF-8 on Linux; "/" between components):
      a directory:     b"D\\0" + path + b"\\0\\n"
      a regular file:  b"F\\0" + path + b"\\0" + decimal size + b"\\0" + b"xxh3-128:<32 hex>" + b"\\n"

Every directory is listed, so empty directories are part of the digest and are copied. A path never
contains NUL, so the manifest is unambiguous. Symbolic links, devices, FIFOs and sockets are refused.
Nothing else (modes, owners, times, the root's own name) enters the digest: it is stable across runs,
machines, creation order and directory-walk order.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from services.ingest.onepass import (
    DEFAULT_BUFSIZE,
    XXH3_128,
    copy_and_checksum,
    fsync_directory,
    read_checksums,
)

MANIFEST_HEADER = b"obsflow-tree-digest-v1\n"


class TreeRefused(ValueError):
    """A directory cannot be ingested as one file (the message says which entry and why)."""


class SymlinkInTree(TreeRefused):
    """A directory contains a symbolic link; obsflow stores only regular files and directories."""


@dataclass(frozen=True)
class TreeEntry:
    """One entry below a tree's root: its relative POSIX path (bytes), whether it is a directory, where."""

    relative: bytes
    is_directory: bool
    path: Path


@dataclass(frozen=True)
class TreeResult:
    """A tree's total file bytes, its digest and how many files and directories it holds."""

    size: int
    digest: str
    file_count: int
    directory_count: int


def _refusal(path: Path, mode: int) -> TreeRefused:
    if stat.S_ISLNK(mode):
        return SymlinkInTree(
            f"refusing {path}: it is a symbolic link; replace it by the file it points to, or remove it"
        )
    return TreeRefused(
        f"refusing {path}: it is not a regular file or directory "
        "(devices, FIFOs and sockets cannot be stored)"
    )


def _walk(root: Path, prefix: bytes) -> Iterator[TreeEntry]:
    with os.scandir(root) as entries:
        for entry in entries:
            mode = entry.stat(follow_symlinks=False).st_mode
            relative = prefix + os.fsencode(entry.name)
            path = Path(entry.path)
            if stat.S_ISDIR(mode):
                yield TreeEntry(relative, True, path)
                yield from _walk(path, relative + b"/")
            elif stat.S_ISREG(mode):
                yield TreeEntry(relative, False, path)
            else:
                raise _refusal(path, mode)


def list_tree(root: Path) -> list[TreeEntry]:
    """Every directory and regular file below root, sorted bytewise by relative path; refuses links."""
    root = Path(root)
    mode = os.lstat(root).st_mode
    if not stat.S_ISDIR(mode):
        if stat.S_ISLNK(mode):
            raise _refusal(root, mode)
        raise TreeRefused(f"{root} is not a directory; checksum it as a single file instead")
    return sorted(_walk(root, b""), key=lambda entry: entry.relative)


class _Manifest:
    """Feeds the manifest's records into the digest as they are produced, never holding it all."""

    def __init__(self) -> None:
        self._hasher = xxhash.xxh3_128(MANIFEST_HEADER)
        self.size = 0
        self.file_count = 0
        self.directory_count = 0

    def add_directory(self, relative: bytes) -> None:
        self._hasher.update(b"D\0" + relative + b"\0\n")
        self.directory_count += 1

    def add_file(self, relative: bytes, size: int, checksum: str) -> None:
        record = b"F\0" + relative + b"\0" + str(size).encode() + b"\0" + checksum.encode() + b"\n"
        self._hasher.update(record)
        self.size += size
        self.file_count += 1

    def result(self) -> TreeResult:
        return TreeResult(
            size=self.size,
            digest=f"{XXH3_128}:{self._hasher.hexdigest()}",
            file_count=self.file_count,
            directory_count=self.directory_count,
        )


def digest_tree(root: Path, bufsize: int = DEFAULT_BUFSIZE) -> TreeResult:
    """Read a directory tree once and return its total size and digest (for verification)."""
    manifest = _Manifest()
    for entry in list_tree(root):
        if entry.is_directory:
            manifest.add_directory(entry.relative)
        else:
            read = read_checksums(entry.path, (XXH3_128,), bufsize)
            manifest.add_file(entry.relative, read.size, read.checksum)
    return manifest.result()


def copy_tree_and_digest(
    src_dir: Path, dst_dir: Path, bufsize: int = DEFAULT_BUFSIZE, *, direct: bool = True
) -> TreeResult:
    """Copy a directory tree to a new dst_dir, one read per file, and return its size and digest.

    Every file and every directory is fsynced before returning. On failure dst_dir is removed.
    """
    entries = list_tree(src_dir)
    dst_dir = Path(dst_dir)
    dst_dir.mkdir()  # raises FileExistsError: a copy never merges into an existing tree
    created = [dst_dir]
    manifest = _Manifest()
    try:
        for entry in entries:
            target = dst_dir / os.fsdecode(entry.relative)
            if entry.is_directory:
                target.mkdir()
                created.append(target)
                manifest.add_directory(entry.relative)
            else:
                copied = copy_and_checksum(entry.path, target, (XXH3_128,), bufsize, direct=direct)
                manifest.add_file(entry.relative, copied.size, copied.checksum)
        # Each directory once, after all its entries exist: names are durable before anyone commits them.
        for directory in (*created, dst_dir.parent):
            fsync_directory(directory)
    except BaseException:
        shutil.rmtree(dst_dir, ignore_errors=True)
        raise
    return manifest.result()


def size_and_checksum(path: Path) -> tuple[int, str]:
    """Size and checksum of a file or directory as obsflow records them (a tree's digest for a directory)."""
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode):
        read = read_checksums(path, (XXH3_128,))
        return read.size, read.checksum
    tree = digest_tree(path)
    return tree.size, tree.digest
