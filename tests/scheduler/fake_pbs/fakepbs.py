"""State shared by the fake TORQUE commands (qsub, qstat, qdel) used by the PBS backend tests.

Jobs live in $FAKE_PBS_HOME: <n>.job (name, queue, output), <n>.pid (the job's session leader), <n>.exit
(exit_status, written when the job ends or is deleted). Job ids look like TORQUE's: "<n>.fakeserver".
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

SERVER = "fakeserver"
EXIT_DELETED = 271  # TORQUE: 256 + SIGTERM for a job killed by qdel


def home() -> Path:
    path = os.environ.get("FAKE_PBS_HOME")
    if not path:
        sys.exit("fake pbs: set FAKE_PBS_HOME to a directory for the fake server's state")
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def next_job_number() -> int:
    counter = home() / "counter"
    with open(counter, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        number = int(f.read() or "0") + 1
        f.seek(0)
        f.truncate()
        f.write(str(number))
    return number


def job_number(job_id: str) -> int | None:
    head = job_id.split(".", 1)[0]
    if not head.isdigit() or not (home() / f"{head}.job").exists():
        return None
    return int(head)


def job_info(number: int) -> dict:
    return json.loads((home() / f"{number}.job").read_text())


def exit_status(number: int) -> int | None:
    path = home() / f"{number}.exit"
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def finished_long_ago(number: int) -> bool:
    keep = float(os.environ.get("FAKE_PBS_KEEP_COMPLETED", "300"))
    path = home() / f"{number}.exit"
    return path.exists() and time.time() - path.stat().st_mtime > keep


def leader_pid(number: int) -> int | None:
    try:
        return int((home() / f"{number}.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def session_members(session_id: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == session_id and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def kill_session(session_id: int, grace_s: float = 5.0) -> None:
    """SIGTERM the session until it is empty (catching processes forked meanwhile), then SIGKILL."""
    deadline = time.monotonic() + grace_s
    sig = signal.SIGTERM
    while members := session_members(session_id):
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        time.sleep(0.02)


def write_exit(number: int, status: int) -> None:
    """Record the exit status unless one is already there (first writer wins, like the server)."""
    path = home() / f"{number}.exit"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(f"{status}\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def host() -> str:
    return socket.gethostname()


if __name__ == "__main__" and sys.argv[1:2] == ["--record-exit"]:
    write_exit(int(sys.argv[2]), int(sys.argv[3]))
