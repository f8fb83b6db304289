"""Who local jobs run as: an unprivileged account named by `run_as`, or the scheduler's own user.

A scheduler running as root runs nothing as root unless told so (`allow_root = true`): jobs run scripts on data
that came from outside, and a job running as root turns any flaw in a pipeline into a flaw of the whole machine.
"""

from __future__ import annotations

import os
import pwd
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigurationError

LOCAL_OPTIONS = "[services.scheduler.backend_options.local]"

# The service's own credentials: a job (another account) must not inherit them. Matched on upper-cased names.
_SECRET_WORDS = ("SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE_KEY")
_SECRET_NAMES = ("OBSFLOW_DATABASE_URL", "OBSFLOW_AMQP_URL", "OBSFLOW_AUTH_SECRET", "OBSFLOW_CONFIG_FILE")

# Runs as the job's first process: drop to the job user, then exec the wrapper. posix_spawn cannot change
# users, and a short-lived helper keeps the job detached exactly as a direct spawn would (its own session).
_DROP_PRIVILEGES = (
    "import os,sys\n"
    "uid,gid=int(sys.argv[1]),int(sys.argv[2])\n"
    "os.setgroups([int(g) for g in sys.argv[3].split(',') if g])\n"
    "os.setgid(gid)\n"
    "os.setuid(uid)\n"
    "if os.getuid()!=uid or os.geteuid()!=uid or os.getegid()!=gid:\n"
    "    sys.exit('obsflow: could not switch to the job user')\n"
    "os.execv(sys.argv[4],sys.argv[4:])\n"
)


@dataclass(frozen=True)
class JobUser:
    """The account local jobs run as: its ids, supplementary groups and home."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def command(self, argv: list[str]) -> list[str]:
        """`argv` prefixed with the helper that switches to this user before it execs."""
        groups = ",".join(str(g) for g in self.groups)
        return [sys.executable, "-I", "-S", "-c", _DROP_PRIVILEGES, str(self.uid), str(self.gid), groups, *argv]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` without the service's secrets, with this user's HOME, USER and LOGNAME."""
        env = {name: value for name, value in base.items() if not is_secret_name(name)}
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name)
        return env

    def may(self, path: Path, bits: int) -> bool:
        """Whether this user has the permission `bits` (a combination of R_OK/W_OK/X_OK) on `path`, by its mode."""
        try:
            info = path.stat()
        except OSError:
            return False
        if info.st_uid == self.uid:
            shift = 6
        elif info.st_gid in self.groups or info.st_gid == self.gid:
            shift = 3
        else:
            shift = 0
        return ((info.st_mode >> shift) & bits) == bits

    def can_reach(self, directory: Path) -> bool:
        """Whether this user can enter `directory` and every directory above it."""
        return all(self.may(d, os.X_OK) for d in (directory, *directory.parents) if d.exists())

    def can_write(self, directory: Path) -> bool:
        """Whether this user could create or replace entries in `directory` (mode bits; no ACLs)."""
        return self.may(directory, os.W_OK | os.X_OK)


def is_secret_name(name: str) -> bool:
    """True for environment variables that hold the service's own credentials."""
    upper = name.upper()
    return upper in _SECRET_NAMES or any(word in upper for word in _SECRET_WORDS)


def job_user(run_as: str | None, allow_root: bool = False) -> JobUser | None:
    """The account named by `run_as` (None: jobs run as the service's user); refuse root unless allowed."""
    if run_as is not None and not isinstance(run_as, str):
        raise ConfigurationError(f"{LOCAL_OPTIONS} run_as must be a user name, got {run_as!r}")
    if not run_as:
        if os.geteuid() == 0 and not allow_root:
            raise ConfigurationError(
                "the scheduler runs as root and the local backend would run every job as root. Set "
                f'{LOCAL_OPTIONS} run_as = "obsflow-jobs" (an unprivileged account, e.g. made with '
                "`useradd --system obsflow-jobs`), or allow_root = true to run jobs as root knowingly"
            )
        return None
    try:
        entry = pwd.getpwnam(run_as) if not run_as.isdigit() else pwd.getpwuid(int(run_as))
    except KeyError:
        raise ConfigurationError(
            f"{LOCAL_OPTIONS} run_as = {run_as!r}: no such user on this host; create it "
            f"(useradd --system {run_as}) or name an existing unprivileged account"
        ) from None
    if entry.pw_uid == 0:
        raise ConfigurationError(
            f"{LOCAL_OPTIONS} run_as = {run_as!r} is root; name an unprivileged account (or remove run_as and set "
            "allow_root = true to run jobs as root knowingly)"
        )
    if os.geteuid() == entry.pw_uid:
        return None  # the service already runs as that account: nothing to switch (nor any privilege to do it)
    if os.geteuid() != 0:
        raise ConfigurationError(
            f"{LOCAL_OPTIONS} run_as = {run_as!r}: only a scheduler running as root can start jobs as another "
            f"user, and this one runs as uid {os.geteuid()}; remove run_as to run jobs as the service's user"
        )
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
    return JobUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def writable_by_others(directory: Path, user: JobUser | None) -> bool:
    """Whether someone other than the scheduler's own user (the job user, or anyone) may write in `directory`."""
    if directory.stat().st_mode & stat.S_IWOTH:  # sticky or not: anyone may add a do_<ACTION>.sh that is missing
        return True
    return user is not None and user.can_write(directory)
