"""Paths resolved beneath a root without ever following a symbolic link: opening, walking, removing.

The kernel resolves each path in one step and refuses any symlink on the way, magic links under /proc included:
openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; where openat2 is missing (before
Linux 5.6, or filtered by seccomp with ENOSYS), one openat(O_NOFOLLOW) per component from the root's descriptor.
What is checked is what is opened: callers read through the descriptor they get and never open the path again.

A root is an absolute, normalised directory other than `/`; removal also needs it to be one of the roots the
caller was configured with. Both are checked on the text alone, before any filesystem call, so a missing or empty
setting can never turn into a cleanup of `/` or of the working directory (NGAS's lesson).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import platform
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigurationError, PermanentError

PATH_MAX = 4096  # bytes, terminating NUL included: no longer path can name anything on Linux

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}  # the unified syscall table; others use the walk
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
_EAGAIN_TRIES = 8  # openat2 may ask for a retry when a rename races the resolution
_DIRECTORY = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC

RootLike = str | os.PathLike[str]


class UnsafeRoot(ConfigurationError):
    """A root that is empty, `/`, relative, not normalised, not configured, or not an existing directory."""


class MissingRoot(UnsafeRoot):
    """A well-formed root that does not exist or is not a directory (a disk not mounted, a typo)."""


class UnsafePath(PermanentError, ValueError):
    """A path that cannot be resolved beneath its root without a symlink, `..` or leaving the root."""


@dataclass(frozen=True)
class Beneath:
    """A path as a root and the part below it (never empty, never with `..`)."""

    root: str
    relative: str

    def __str__(self) -> str:
        return f"{self.root.rstrip('/')}/{self.relative}"


@dataclass(frozen=True, order=True)
class Entry:
    """One entry of a walked tree: its path relative to the walked directory ('/'-separated) and its lstat mode."""

    relative: str
    mode: int

    @property
    def is_directory(self) -> bool:
        """A real directory (never a link to one)."""
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        """A regular file (never a link to one)."""
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        """A symbolic link (listed, never followed)."""
        return stat.S_ISLNK(self.mode)


def check_root(root: RootLike | None, configured: Iterable[RootLike] | None = None) -> Path:
    """The root as a Path, or UnsafeRoot if it is empty, `/`, relative, has `.`/`..`, or is not among `configured`."""
    text = "" if root is None else os.fspath(root)
    if not text or "\0" in text:
        raise UnsafeRoot(f"a root directory is empty or contains NUL ({text[:200]!r}): set it in the configuration")
    if not os.path.isabs(text):
        raise UnsafeRoot(f"root {text[:200]!r} is relative: configure an absolute directory")
    if len(os.fsencode(text)) >= PATH_MAX:
        raise UnsafeRoot(f"root {text[:200]!r}... is longer than {PATH_MAX - 1} bytes")
    parts = text.split("/")
    if any(part in (".", "..") for part in parts):
        raise UnsafeRoot(f"root {text[:200]!r} contains '.' or '..': configure it in its plain absolute form")
    normal = os.path.normpath(text)
    if not normal.strip("/"):
        raise UnsafeRoot("refusing '/' as a root: configure the directory this work belongs to")
    if configured is not None:
        allowed = {os.path.normpath(os.fspath(c)) for c in configured if c is not None and os.fspath(c)}
        if normal not in allowed:
            raise UnsafeRoot(
                f"root {text[:200]!r} is not one of the configured roots ({', '.join(sorted(allowed)) or 'none'})"
            )
    return Path(normal)


def relative_parts(relative: str) -> list[str]:
    """The components of a path below a root; UnsafePath for an absolute one, `..`, NUL, or one too long."""
    if not isinstance(relative, str) or "\0" in relative:
        raise UnsafePath(f"invalid path {str(relative)[:200]!r}: not text, or it contains NUL")
    if len(os.fsencode(relative)) >= PATH_MAX:
        raise UnsafePath(f"a path of {len(relative)} characters is longer than the {PATH_MAX - 1} bytes Linux allows")
    if relative.startswith("/"):
        raise UnsafePath(f"refusing {relative[:200]!r}: an absolute path where one below the root was expected")
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"refusing {relative[:200]!r}: it contains '..' (path traversal)")
    return parts


def split_beneath(path: str, roots: Iterable[str]) -> Beneath | None:
    """Which of `roots` holds the absolute `path` (compared as text), or None; the root itself is not beneath it."""
    if not path.startswith("/"):
        return None
    for root in roots:
        prefix = os.path.normpath(root).rstrip("/") + "/"
        if path.startswith(prefix) and path[len(prefix):].strip("/"):
            return Beneath(os.path.normpath(root), path[len(prefix):].lstrip("/"))
    return None


@functools.cache
def _openat2() -> Any:
    number = _SYS_OPENAT2.get(platform.machine())
    if number is None:
        return None
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    return functools.partial(syscall, ctypes.c_long(number))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_use_openat2 = True  # set False after ENOSYS (and by the tests, to exercise the walk)


def _open_with_openat2(dir_fd: int, parts: list[str], flags: int) -> int | None:
    """The descriptor, or None when this kernel has no openat2."""
    global _use_openat2
    call = _openat2() if _use_openat2 else None
    if call is None:
        return None
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE)
    path = os.fsencode("/".join(parts) or ".")
    for _ in range(_EAGAIN_TRIES):
        fd = call(ctypes.c_int(dir_fd), ctypes.c_char_p(path), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        error = ctypes.get_errno()
        if error == errno.ENOSYS:
            _use_openat2 = False
            return None
        if error != errno.EAGAIN:
            raise _translate(error, dir_fd, parts)
    raise UnsafePath(f"{'/'.join(parts)[:200]!r} kept changing while it was resolved")


def _open_by_walk(dir_fd: int, parts: list[str], flags: int) -> int:
    """openat(O_NOFOLLOW) one component at a time: no link is ever followed, wherever it is."""
    fd = os.open(".", _DIRECTORY, dir_fd=dir_fd)
    try:
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            try:
                opened = os.open(part, (flags if last else _DIRECTORY) | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                raise _translate(e.errno or errno.EIO, dir_fd, parts) from e
            os.close(fd)
            fd = opened
        if not parts:
            opened = os.open(".", flags | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = opened
        if flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH|O_NOFOLLOW gives the link itself
            raise _translate(errno.ELOOP, dir_fd, parts)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _translate(error: int, dir_fd: int, parts: list[str]) -> OSError | UnsafePath:
    """The error a failed resolution reports: a link or an escape is UnsafePath, the rest stays an OSError."""
    shown = "/".join(parts)[:200]
    if error in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
        link = _first_link(dir_fd, parts)
        if link is not None:
            where = "" if link == shown else f" (on the way to {shown!r})"
            return UnsafePath(f"{link[:200]!r}{where} is a symbolic link, and links are never followed here")
        if error == errno.EXDEV:
            return UnsafePath(f"{shown!r} leaves the directory it must stay beneath")
    if error == errno.ENAMETOOLONG:
        return UnsafePath(f"{shown!r}...: a name in it is longer than the filesystem allows")
    return OSError(error, os.strerror(error), shown)


def _first_link(dir_fd: int, parts: list[str]) -> str | None:
    """The first component that is a symlink (for the message only: the kernel has already refused)."""
    for depth in range(len(parts)):
        try:
            if stat.S_ISLNK(os.stat("/".join(parts[: depth + 1]), dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return "/".join(parts[: depth + 1])
        except OSError:
            return None
    return None


def _open(dir_fd: int, parts: list[str], flags: int) -> int:
    fd = _open_with_openat2(dir_fd, parts, flags)
    return fd if fd is not None else _open_by_walk(dir_fd, parts, flags)


def open_root(root: RootLike, configured: Iterable[RootLike] | None = None) -> int:
    """An O_PATH descriptor of a checked root (see check_root); UnsafeRoot if it is not an existing directory."""
    path = check_root(root, configured)
    try:
        return os.open(path, _DIRECTORY)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise MissingRoot(f"root {path} does not exist or is not a directory (not mounted?): {e.strerror}") from e


@contextlib.contextmanager
def _root_descriptor(root: RootLike | int) -> Iterator[int]:
    if isinstance(root, int):
        yield root
        return
    fd = open_root(root)
    try:
        yield fd
    finally:
        os.close(fd)


def open_beneath(root: RootLike | int, relative: str, flags: int = os.O_RDONLY) -> int:
    """Open `relative` strictly beneath `root` (a checked path or a directory descriptor), following no symlink."""
    parts = relative_parts(relative)
    if not parts:
        raise UnsafePath(f"{relative!r} names the root itself; name an entry beneath it")
    with _root_descriptor(root) as root_fd:
        return _open(root_fd, parts, flags)


def _list(root_fd: int, parts: list[str]) -> list[Entry]:
    fd = _open(root_fd, parts, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(fd) as listing:
            return sorted(Entry(e.name, e.stat(follow_symlinks=False).st_mode) for e in listing)
    finally:
        os.close(fd)


def list_beneath(root: RootLike | int, relative: str = "") -> list[Entry]:
    """The entries of the one directory `relative` beneath `root`, by name; the directory is reached via no link."""
    with _root_descriptor(root) as root_fd:
        return _list(root_fd, relative_parts(relative))


def walk_beneath(root: RootLike | int, relative: str = "") -> Iterator[Entry]:
    """Every entry below `relative` (beneath `root`), parents first; symlinks are listed, never entered."""
    base = relative_parts(relative)
    with _root_descriptor(root) as root_fd:
        pending = [""]
        while pending:
            directory = pending.pop()
            for found in _list(root_fd, base + relative_parts(directory)):
                entry = Entry(f"{directory}/{found.relative}" if directory else found.relative, found.mode)
                yield entry
                if entry.is_directory:
                    pending.append(entry.relative)


def remove_beneath(root: RootLike | None, relative: str, configured: Iterable[RootLike] | None = None) -> bool:
    """Remove the file, symlink or tree at `relative` beneath a checked root; False if nothing was there.

    The root is checked (and matched against `configured` when given) before anything touches the filesystem; the
    parent is resolved beneath it without following links; a link found there is removed itself, and a tree is
    removed by shutil.rmtree's descriptor-based walk, which never descends through a link.
    """
    checked = check_root(root, configured)
    parts = relative_parts(relative)
    if not parts:
        raise UnsafePath(f"refusing to remove {checked} itself: only entries beneath a root are removed")
    root_fd = open_root(checked)
    try:
        parent = _open(root_fd, parts[:-1], _DIRECTORY)
    except FileNotFoundError:
        return False
    finally:
        os.close(root_fd)
    try:
        try:
            mode = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(mode):
            shutil.rmtree(parts[-1], dir_fd=parent)
        else:
            os.unlink(parts[-1], dir_fd=parent)
        return True
    finally:
        os.close(parent)
