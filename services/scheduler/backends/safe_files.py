"""Writing and reading files in directories a job's user can write to: a run's work directory and its logs.

When jobs run as another account (`run_as`), that account may put a symbolic link, a FIFO or a hard link where
the scheduler is about to write or read: a log opened with O_TRUNC through a link to /etc/passwd would empty it,
a status file that is a FIFO would block the dispatcher. So the scheduler never follows a link in the last
component, creates its files exclusively after removing whatever was there, reads only small regular files
without blocking, and makes the directories itself, sticky, so the job's user can add files but not rename or
remove the scheduler's (nor the directories, nor replace one with a link).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from services.scheduler.backends.base import JobSubmitError
from services.scheduler.backends.identity import JobUser

CONTROL_FILE_LIMIT = 64 * 1024  # a status file or cancel marker is a few lines
_JOB_DIR_MODE = 0o1775  # rwx for the scheduler and the job's group, sticky: the group cannot touch our entries


class UntrustedFile(OSError):
    """A file where the scheduler expected its own or the wrapper's: a link, FIFO, device, hard link or too big."""


def open_new(path: Path, mode: int = 0o644) -> int:
    """A new, empty file at `path`, open for writing; whatever was there (file, link, FIFO) is removed first."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # removes a link itself, never its target; a directory raises (and stays)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    os.fchmod(fd, mode)  # the mode asked for, whatever the umask
    return fd


def create_file(path: Path, content: bytes = b"", mode: int = 0o644, group: int | None = None) -> None:
    """Create `path` anew with `content` (see open_new), group-owned by `group` when given (before it is written)."""
    fd = open_new(path, mode)
    if group is not None:
        os.fchown(fd, -1, group)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


def read_small_file(path: Path, limit: int = CONTROL_FILE_LIMIT) -> str | None:
    """The text of a regular file of at most `limit` bytes, None if there is none; UntrustedFile for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UntrustedFile(e.errno, f"{path} is a symbolic link, not a file the job wrote") from e
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise UntrustedFile(errno.EPERM, f"{path} is not a plain file (a FIFO, device or hard link)")
        if info.st_size > limit:
            raise UntrustedFile(errno.EFBIG, f"{path} is {info.st_size} bytes, more than the {limit} allowed")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    return data[:limit].decode(errors="replace")


def is_plain_file(path: Path) -> bool:
    """Whether `path` is a regular file itself (a link to one does not count)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def make_job_dir(path: Path, user: JobUser | None) -> None:
    """Create `path` (and its parents) if needed; with a job user, make it ours, sticky and writable by its group.

    A directory there that is a link or belongs to someone else is refused: the job's user made it.
    """
    path.mkdir(parents=True, exist_ok=True)
    if user is None:
        return  # jobs run as the scheduler's own user: there is nobody to guard against
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise JobSubmitError(
            f"{path} is not a directory the scheduler made (a link, or owned by uid {info.st_uid}); "
            "it was changed by someone else: remove it and retry the run"
        )
    if info.st_gid != user.gid:
        os.chown(path, -1, user.gid, follow_symlinks=False)
    if stat.S_IMODE(info.st_mode) != _JOB_DIR_MODE:
        os.chmod(path, _JOB_DIR_MODE)
