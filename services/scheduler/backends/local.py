"""Local process-pool backend: each job is a detached wrapper process, within a CPU and memory budget.

Design (the simpler correct one): submit() waits until the job fits in the budget and then starts it, so
an external id always names a process that has started; nothing is queued inside the backend, and so
nothing is lost when the scheduler dies. Jobs run in their own session (they survive the scheduler's
death); the external id `<pid>:<start ticks>:<ncpu>:<mem_mb>:<log path>` is enough for a fresh backend
to find the job again: the wrapper's exit-status file if it has finished, else the pid (checked against
its /proc start time so a reused pid is not mistaken for the job); dead with no status file is LOST.
A restarted backend counts a previous process's jobs against its budget once status() has seen them.

Who jobs run as (`identity.py`): the `run_as` account when set (the scheduler, as root, switches to it in the
job's first process); else the scheduler's own user, which may be root only with `allow_root`. The job's work
and log directories are then made writable by that account's group, and every file the scheduler writes or
reads there is handled as if the account were hostile (`safe_files.py`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.scheduler.backends.base import ExternalIdError, JobSpec, JobState, JobStatus, JobSubmitError
from services.scheduler.backends.identity import LOCAL_OPTIONS, JobUser, job_user
from services.scheduler.backends.safe_files import make_job_dir, open_new
from services.scheduler.backends.wrapper import (
    JobFiles,
    mark_cancelled,
    read_exit_record,
    status_after_the_fact,
    status_from_record,
    was_cancelled,
    write_wrapper,
)

log = structlog.get_logger()


@dataclass(frozen=True)
class LocalJob:
    """What a local external id encodes."""

    pid: int
    start_ticks: int
    ncpu: int
    mem_mb: int
    files: JobFiles

    @property
    def external_id(self) -> str:
        return f"{self.pid}:{self.start_ticks}:{self.ncpu}:{self.mem_mb}:{self.files.log}"

    @classmethod
    def parse(cls, external_id: str) -> LocalJob:
        """The job named by an external id from LocalBackend.submit."""
        parts = external_id.split(":", 4)
        try:
            pid, start, ncpu, mem = (int(p) for p in parts[:4])
            log_path = parts[4]
        except (ValueError, IndexError) as e:
            raise ExternalIdError(
                f"{external_id!r} is not a local external id (expected '<pid>:<start>:<ncpu>:<mem_mb>:<log>')"
            ) from e
        return cls(pid, start, ncpu, mem, JobFiles(Path(log_path)))


class LocalBackend:
    """Runs jobs as detached local processes, at most `total_cpus` CPUs and `total_mem_mb` MB at a time."""

    name = "local"

    def __init__(
        self,
        total_cpus: int | None = None,
        total_mem_mb: int | None = None,
        poll_interval_s: float = 0.05,
        cancel_grace_s: float = 5.0,
        run_as: str | None = None,
        allow_root: bool = False,
    ):
        if not isinstance(allow_root, bool):
            raise ValueError(f"allow_root must be true or false, got {allow_root!r}")
        self.job_user: JobUser | None = job_user(run_as, allow_root)  # refuses root unless allowed
        if self.job_user is None and os.geteuid() == 0:
            log.warning("local_jobs_run_as_root", setting=f"{LOCAL_OPTIONS} allow_root = true",
                        hint="set run_as to an unprivileged account instead")
        self.total_cpus = total_cpus or os.cpu_count() or 1
        self.total_mem_mb = total_mem_mb or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        self._poll_interval_s = poll_interval_s
        self._cancel_grace_s = cancel_grace_s
        self._running: dict[str, LocalJob] = {}
        self._children: set[int] = set()
        self._admission = asyncio.Lock()  # jobs start in the order they were submitted
        self._host = socket.gethostname()

    @property
    def used(self) -> tuple[int, int]:
        """CPUs and MB of memory held by the running jobs this backend knows about."""
        return sum(j.ncpu for j in self._running.values()), sum(j.mem_mb for j in self._running.values())

    async def submit(self, spec: JobSpec) -> str:
        """Wait until the job fits in the budget, start it detached and return its external id."""
        self._check_fits_at_all(spec)
        make_job_dir(spec.workdir, self.job_user)
        files = write_wrapper(spec, self.job_user)
        self._check_job_user_can_run(spec, files)
        async with self._admission:
            while not self._fits(spec):
                await asyncio.sleep(self._poll_interval_s)
                self._forget_finished()
            job = self._spawn(spec, files)
            self._running[job.external_id] = job
        log.info("local_job_started", key=spec.key, pid=job.pid, log_path=str(files.log))
        return job.external_id

    async def status(self, external_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Each job's status from its exit-status file or its process; adopts running jobs into the budget."""
        self._reap_children()
        statuses = {}
        for eid in external_ids:
            job = LocalJob.parse(eid)
            status = self._status_of(job)
            if status.state.is_final:
                self._running.pop(eid, None)
            else:
                self._running.setdefault(eid, job)
            statuses[eid] = status
        return statuses

    async def cancel(self, external_id: str) -> None:
        """SIGTERM every process of the job's session, SIGKILL what is left after the grace period."""
        job = LocalJob.parse(external_id)
        mark_cancelled(job.files)
        if _process_alive(job.pid, job.start_ticks):
            # Signal again each round: a process forked while the first signals were sent would be missed.
            signalled: set[int] = set()
            deadline = asyncio.get_running_loop().time() + self._cancel_grace_s
            while asyncio.get_running_loop().time() < deadline:
                signalled |= _signal_session(job.pid, signal.SIGTERM, skip=signalled)
                await asyncio.sleep(self._poll_interval_s)
                self._reap_children()
                if not _session_members(job.pid):
                    break
            _signal_session(job.pid, signal.SIGKILL)
        self._reap_children()
        self._running.pop(external_id, None)
        log.info("local_job_cancelled", pid=job.pid)

    async def close(self) -> None:
        """Reap finished children; running jobs keep running and can be re-attached by id."""
        self._reap_children()

    def _check_fits_at_all(self, spec: JobSpec) -> None:
        if spec.ncpu < 1 or spec.mem_mb < 0:
            raise JobSubmitError(f"job {spec.key}: ncpu must be ≥ 1 and mem_mb ≥ 0 (got {spec.ncpu}, {spec.mem_mb})")
        if spec.ncpu > self.total_cpus or spec.mem_mb > self.total_mem_mb:
            raise JobSubmitError(
                f"job {spec.key} needs {spec.ncpu} CPUs and {spec.mem_mb} MB but the local pool has "
                f"{self.total_cpus} CPUs and {self.total_mem_mb} MB: lower the action's ncpu/mem or raise the budget"
            )
        if not os.access(spec.do_script, os.X_OK):
            raise JobSubmitError(
                f"job {spec.key}: do-script {spec.do_script} does not exist or is not executable "
                "(check path_to_do_scripts, or chmod +x it)"
            )

    def _check_job_user_can_run(self, spec: JobSpec, files: JobFiles) -> None:
        user = self.job_user
        if user is None:
            return
        for what, path, bits in (("run", spec.do_script, os.R_OK | os.X_OK), ("enter", spec.workdir, os.X_OK),
                                 ("write in", files.log.parent, os.W_OK | os.X_OK)):
            if not (user.may(path, bits) and user.can_reach(path.parent)):
                raise JobSubmitError(
                    f"job {spec.key}: the jobs' user {user.name} cannot {what} {path} (check the permissions "
                    f"of it and of every directory above it; {LOCAL_OPTIONS} run_as names that user)"
                )

    def _fits(self, spec: JobSpec) -> bool:
        cpus, mem = self.used
        return cpus + spec.ncpu <= self.total_cpus and mem + spec.mem_mb <= self.total_mem_mb

    def _forget_finished(self) -> None:
        self._reap_children()
        for eid, job in list(self._running.items()):
            if self._status_of(job).state.is_final:
                del self._running[eid]

    def _status_of(self, job: LocalJob) -> JobStatus:
        # Order matters: a job that exits between two checks must read as finished, never as LOST.
        record = read_exit_record(job.files)
        if record is not None:
            return status_from_record(record, was_cancelled(job.files))
        if _process_alive(job.pid, job.start_ticks):
            return JobStatus(JobState.RUNNING, None, self._host, None)
        return status_after_the_fact(job.files, f"process {job.pid}")

    def _spawn(self, spec: JobSpec, files: JobFiles) -> LocalJob:
        argv = ["/bin/bash", str(files.wrapper)]
        env = dict(os.environ)
        if self.job_user is not None:
            argv, env = self.job_user.command(argv), self.job_user.environment(env)
        stdin = os.open(os.devnull, os.O_RDONLY)
        output = open_new(files.log)  # the job's user can write in the log directory: never follow what is there
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin, 0),
                    (os.POSIX_SPAWN_DUP2, output, 1),
                    (os.POSIX_SPAWN_DUP2, output, 2),
                ],
                setsid=True,  # its own session: it outlives us and cancel() can signal all of it
            )
        finally:
            os.close(stdin)
            os.close(output)
        self._children.add(pid)
        start_ticks = _start_ticks(pid)
        if start_ticks is None:  # cannot happen for an unreaped child; refuse rather than guess
            raise JobSubmitError(f"job {spec.key}: started pid {pid} but cannot read /proc/{pid}/stat")
        return LocalJob(pid, start_ticks, spec.ncpu, spec.mem_mb, files)

    def _reap_children(self) -> None:
        # Only our own children, by pid: never steal the exit status of asyncio's subprocesses.
        for pid in list(self._children):
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                reaped = pid
            if reaped == pid:
                self._children.discard(pid)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], session [3], start time [19])."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _process_alive(pid: int, start_ticks: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == start_ticks


def _session_members(session_id: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and int(fields[3]) == session_id and fields[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def _signal_session(session_id: int, sig: signal.Signals, skip: set[int] | None = None) -> set[int]:
    """Send `sig` to every live process of the session (but those in `skip`); return the pids signalled."""
    signalled = set()
    for pid in _session_members(session_id):
        if skip and pid in skip:
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        signalled.add(pid)
    return signalled
