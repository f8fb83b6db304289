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

import contextlib
import errno
import os
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
from shared.safe_paths import UnsafePath, UnsafeRoot, open_beneath, remove_beneath, walk_beneath

MANIFEST_HEADER = b"obsflow-tree-digest-v1\n"
# A FIFO opens without waiting for a writer (and is then refused); no device becomes our controlling terminal.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
Tree = Path | int  # a directory's path, or a descriptor of it opened by the caller


class TreeRefused(ValueError):
    """A directory cannot be ingested as one file (the message says which entry and why)."""


class SymlinkInTree(TreeRefused):
    """A directory contains a symbolic link; obsflow stores only regular files and directories."""


@dataclass(frozen=True)
class TreeEntry:
    """One entry below a tree's root: its relative POSIX path (bytes) and whether it is a directory."""

    relative: bytes
    is_directory: bool


@dataclass(frozen=True)
class TreeResult:
    """A tree's total file bytes, its digest and how many files and directories it holds."""

    size: int
    digest: str
    file_count: int
    directory_count: int


def _refusal(path: str, mode: int) -> TreeRefused:
    if stat.S_ISLNK(mode):
        return SymlinkInTree(
            f"refusing {path}: it is a symbolic link; replace it by the file it points to, or remove it"
        )
    return TreeRefused(
        f"refusing {path}: it is not a regular file or directory "
        "(devices, FIFOs and sockets cannot be stored)"
    )


@contextlib.contextmanager
def _tree_descriptor(root: Tree) -> Iterator[int]:
    """The tree's directory descriptor: the caller's, or its path opened without following a link."""
    if isinstance(root, int):
        yield root
        return
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        mode = os.lstat(root).st_mode
        if stat.S_ISLNK(mode):
            raise _refusal(str(root), mode) from e
        raise TreeRefused(f"{root} is not a directory; checksum it as a single file instead") from e
    try:
        yield fd
    finally:
        os.close(fd)


def _shown(root: Tree, shown: str | None) -> str:
    return shown or (str(root) if not isinstance(root, int) else "the directory")


def list_tree(root: Tree, *, shown: str | None = None) -> list[TreeEntry]:
    """Every directory and regular file below root, sorted bytewise by relative path; refuses links.

    Nothing is followed: the walk resolves every directory beneath the root's descriptor (shared/safe_paths.py).
    `shown` names the tree in messages (a descriptor has no name).
    """
    name = _shown(root, shown)
    entries: list[TreeEntry] = []
    with _tree_descriptor(root) as fd:
        try:
            for entry in walk_beneath(fd):
                if not (entry.is_directory or entry.is_file):
                    raise _refusal(f"{name}/{entry.relative}", entry.mode)
                entries.append(TreeEntry(os.fsencode(entry.relative), entry.is_directory))
        except UnsafePath as e:  # an entry became a link while the tree was walked
            raise SymlinkInTree(f"refusing {name}: {e}") from e
    return sorted(entries, key=lambda entry: entry.relative)


@contextlib.contextmanager
def _open_file(tree_fd: int, entry: TreeEntry, name: str) -> Iterator[int]:
    """A listed file opened beneath the tree (never through a link), checked to be a regular file still."""
    relative = os.fsdecode(entry.relative)
    try:
        fd = open_beneath(tree_fd, relative, _READ_FLAGS)
    except UnsafePath as e:
        raise SymlinkInTree(f"refusing {name}/{relative}: {e}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refusal(f"{name}/{relative}", mode)
        yield fd
    finally:
        os.close(fd)


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


def digest_tree(root: Tree, bufsize: int = DEFAULT_BUFSIZE, *, shown: str | None = None) -> TreeResult:
    """Read a directory tree once and return its total size and digest (for verification)."""
    manifest = _Manifest()
    name = _shown(root, shown)
    with _tree_descriptor(root) as tree_fd:
        for entry in list_tree(tree_fd, shown=name):
            if entry.is_directory:
                manifest.add_directory(entry.relative)
            else:
                with _open_file(tree_fd, entry, name) as fd:
                    read = read_checksums(fd, (XXH3_128,), bufsize)
                manifest.add_file(entry.relative, read.size, read.checksum)
    return manifest.result()


def copy_tree_and_digest(
    src_dir: Tree, dst_dir: Path, bufsize: int = DEFAULT_BUFSIZE, *, direct: bool = True, shown: str | None = None
) -> TreeResult:
    """Copy a directory tree (a path, or a descriptor to read through) to a new dst_dir, one read per file, and
    return its size and digest.

    Every file and every directory is fsynced before returning. On failure dst_dir is removed.
    """
    name = _shown(src_dir, shown)
    dst_dir = Path(dst_dir).absolute()
    with _tree_descriptor(src_dir) as tree_fd:
        entries = list_tree(tree_fd, shown=name)
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
                    with _open_file(tree_fd, entry, name) as fd:
                        copied = copy_and_checksum(fd, target, (XXH3_128,), bufsize, direct=direct)
                    manifest.add_file(entry.relative, copied.size, copied.checksum)
            # Each directory once, after all its entries exist: names are durable before anyone commits them.
            for directory in (*created, dst_dir.parent):
                fsync_directory(directory)
        except BaseException:
            with contextlib.suppress(OSError, UnsafePath, UnsafeRoot):  # the first error is the one to report
                remove_beneath(dst_dir.parent, dst_dir.name)
            raise
    return manifest.result()


def size_and_checksum(path: Path) -> tuple[int, str]:
    """Size and checksum of a file or directory as obsflow records them (a tree's digest for a directory)."""
    try:
        fd = os.open(path, _READ_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refusal(str(path), os.lstat(path).st_mode) from e
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            read = read_checksums(fd, (XXH3_128,))
            return read.size, read.checksum
        if not stat.S_ISDIR(mode):
            raise _refusal(str(path), mode)
        tree = digest_tree(fd, shown=str(path))
    finally:
        os.close(fd)
    return tree.size, tree.digest
