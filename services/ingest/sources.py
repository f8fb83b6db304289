"""Sources on this server's disks: opened beneath a configured source root, read only through that descriptor.

A source (an announced path, a local-path upload) is opened twice, each time resolved by the kernel beneath its
root without following any symlink (`shared/safe_paths.py`): by the probe, which tells its kind and size before a
store is chosen, and by the copy, which decides from the descriptor it reads whether it copies a file or a tree.
No path is checked and then opened again by name: whatever the probe saw, the copy's own descriptor is the truth,
and what it measured is compared with the claim before anything is minted. Everything here blocks: call it in a
thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.ingest.digest import TreeRefused, copy_tree_and_digest
from services.ingest.minting import Refusal, RefusalCode
from services.ingest.onepass import MD5, XXH3_128, copy_and_checksum
from shared.safe_paths import Beneath, UnsafePath, UnsafeRoot, open_beneath

# A FIFO opens without waiting for a writer (and is then refused); no device becomes our controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY


class UnreadableSource(TreeRefused):
    """A source that is neither a regular file nor a directory, or a tree claimed with an md5."""


@dataclass(frozen=True)
class Probed:
    """What the probe found: a directory (size 0: known only after the walk) or a regular file and its size."""

    is_directory: bool
    size: int


@dataclass(frozen=True)
class Copied:
    """What a copy into staging measured: its size, its checksums by algorithm, and whether it was a tree."""

    size: int
    checksums: dict[str, str]
    is_directory: bool


def _open(source: Beneath) -> tuple[int, os.stat_result]:
    fd = open_beneath(source.root, source.relative, _OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise UnreadableSource(f"refusing {source}: it is neither a regular file nor a directory "
                                   "(devices, FIFOs and sockets cannot be ingested)")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def refusal_for(source: Beneath, error: Exception) -> Refusal | None:
    """The refusal a failure to open or read `source` means, or None for an error to retry (EIO and the like)."""
    if isinstance(error, UnsafePath):
        return Refusal(RefusalCode.INVALID_PATH, f"refusing {source}: {error}; ingest reads only what lies beneath "
                       "[services.ingest] source_roots, never through a symbolic link")
    if isinstance(error, UnsafeRoot):
        return Refusal(RefusalCode.NOT_FOUND, f"cannot read {source}: {error}")
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        return Refusal(RefusalCode.NOT_FOUND, f"nothing exists at {source}; check the path and that this host "
                       "mounts the filesystem it is on")
    if isinstance(error, PermissionError):
        return Refusal(RefusalCode.INVALID_PATH, f"the ingest service may not read {source}; fix its permissions")
    if isinstance(error, TreeRefused):
        return Refusal(RefusalCode.INVALID_PATH, str(error))
    return None


def probe_source(source: Beneath) -> Probed | Refusal:
    """Open `source` beneath its root and tell its kind and size, or why it cannot be ingested."""
    try:
        fd, info = _open(source)
    except (OSError, UnsafePath, UnsafeRoot, TreeRefused) as e:
        refusal = refusal_for(source, e)
        if refusal is None:
            raise
        return refusal
    os.close(fd)
    if stat.S_ISDIR(info.st_mode):
        return Probed(is_directory=True, size=0)
    return Probed(is_directory=False, size=info.st_size)


def tree_bytes(source: Beneath) -> int:
    """The bytes of the regular files below the directory `source` (what its copy will take), read through
    descriptors beneath its root; links are not followed (the copy refuses them), unreadable entries count 0."""
    fd = open_beneath(source.root, source.relative, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _bytes_below(fd)
    finally:
        os.close(fd)


def _bytes_below(directory_fd: int) -> int:
    total = 0
    with os.scandir(directory_fd) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
                elif stat.S_ISDIR(info.st_mode):
                    child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory_fd)
                    try:
                        total += _bytes_below(child)
                    finally:
                        os.close(child)
            except OSError:
                continue  # vanished or unreadable: the copy itself says what is wrong with it
    return total


def copy_source(source: Beneath, staged: Path, algorithms: Sequence[str], *, direct: bool) -> Copied:
    """Open `source` beneath its root and copy what that descriptor reads (a file, or a tree) to `staged`."""
    fd, info = _open(source)
    try:
        if not stat.S_ISDIR(info.st_mode):
            copied = copy_and_checksum(fd, staged, algorithms, direct=direct)
            return Copied(copied.size, copied.checksums, is_directory=False)
        if MD5 in algorithms:
            raise UnreadableSource(f"{source} is a directory: its checksum is the xxh3-128 tree digest; md5 "
                                   "applies to single files only")
        tree = copy_tree_and_digest(fd, staged, direct=direct, shown=str(source))
        return Copied(tree.size, {XXH3_128: tree.digest}, is_directory=True)
    finally:
        os.close(fd)


def prepare_source_roots(roots: Sequence[str], default: Path) -> list[str]:
    """Create the default source root if it is one of `roots`; return the roots that are not directories."""
    if str(default) in roots:
        default.mkdir(parents=True, exist_ok=True)
    return [root for root in roots if not os.path.isdir(root)]
