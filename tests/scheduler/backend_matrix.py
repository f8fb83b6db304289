"""The contract every execution backend meets, run by test_backend_local/pbs/slurm against each backend.

Jobs are tiny shell scripts; every wait is on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from services.scheduler.backends import Backend, JobSpec, JobState, JobStatus

WAIT_S = 30.0


class JobFactory:
    """Makes JobSpecs whose do-script is a given shell body, all under one temporary directory."""

    def __init__(self, root: Path):
        self.root = root
        (root / "work").mkdir(parents=True, exist_ok=True)
        (root / "do").mkdir(exist_ok=True)

    def __call__(self, name: str, body: str, **fields) -> JobSpec:
        action = fields.pop("action", name.upper().replace("-", "_"))
        do_script = self.root / "do" / f"do_{action}.sh"
        do_script.write_text("#!/bin/bash\n" + body + "\n")
        do_script.chmod(0o755)
        values = {
            "key": f"run-1/{action}/{name}",
            "action": action,
            "args": [],
            "workdir": self.root / "work",
            "log_path": self.root / "logs" / f"{name}.log",
            "ncpu": 1,
            "mem_mb": 100,
            "queue": None,
            "timeout_s": None,
            "extra_batch_options": None,
            "do_script": do_script,
            "source_script": None,
            "conda_env": None,
        }
        values.update(fields)
        return JobSpec(**values)

    def release_all(self) -> None:
        """Let every blocking job finish (test teardown: leave no process behind)."""
        (self.root / "work" / "release-all").touch()

    def release(self, name: str) -> None:
        """Let a job made with `blocking_body(name)` finish."""
        (self.root / "work" / f"release-{name}").touch()


def blocking_body(name: str) -> str:
    """A do-script body that runs until the test calls JobFactory.release(name)."""
    return f'while [ ! -e release-{name} ] && [ ! -e release-all ]; do sleep 0.02; done\necho "released {name}"'


async def wait_for_status(
    backend: Backend, external_id: str, accept: Callable[[JobStatus], bool], timeout_s: float = WAIT_S
) -> JobStatus:
    """Poll status() until `accept` holds; fail with the last status seen after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = (await backend.status([external_id]))[external_id]
        if accept(status):
            return status
        assert status.state is not JobState.LOST, f"job lost while waiting: {status}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {external_id} did not reach the expected state in {timeout_s}s; last: {status}")


def is_final(status: JobStatus) -> bool:
    return status.state.is_final


def is_running(status: JobStatus) -> bool:
    return status.state is JobState.RUNNING


async def check_success(backend: Backend, jobs: JobFactory) -> None:
    """A job runs its do-script with quoted args, inside its source_script and env, logging to log_path."""
    setup = jobs.root / "setup.sh"
    setup.write_text("export FROM_SETUP=sourced\n")
    spec = jobs(
        "ok",
        'echo "args: $1|$2" ; echo "setup: $FROM_SETUP" ; echo "env: $OBSFLOW_TEST_VAR" ; echo "cwd: $PWD"',
        args=["zen.2459122.30000.sum.uvh5", "two words"],
        source_script=str(setup),
        env={"OBSFLOW_TEST_VAR": "it's here"},
    )
    external_id = await backend.submit(spec)
    status = await wait_for_status(backend, external_id, is_final)
    assert status.state is JobState.SUCCEEDED, status
    assert status.exit_code == 0
    log = spec.log_path.read_text()
    assert "args: zen.2459122.30000.sum.uvh5|two words" in log
    assert "setup: sourced" in log
    assert "env: it's here" in log
    assert f"cwd: {spec.workdir}" in log


async def check_failure(backend: Backend, jobs: JobFactory) -> None:
    """A do-script's non-zero exit is FAILED with that exit code; a failing source_script names itself."""
    failing = await backend.submit(jobs("fails", "echo about to fail; exit 3"))
    broken_setup = jobs("bad-setup", "echo never", source_script=str(jobs.root / "no-such-setup.sh"))
    broken = await backend.submit(broken_setup)
    status = await wait_for_status(backend, failing, is_final)
    assert (status.state, status.exit_code) == (JobState.FAILED, 3), status
    status = await wait_for_status(backend, broken, is_final)
    assert status.state is JobState.FAILED, status
    assert status.detail and "source_script" in status.detail
    assert "never" not in broken_setup.log_path.read_text()


async def check_timeout(backend: Backend, jobs: JobFactory) -> None:
    """A job past its timeout is killed by the wrapper and reads TIMED_OUT with exit 124."""
    external_id = await backend.submit(jobs("slow", "sleep 60", timeout_s=0.3))
    status = await wait_for_status(backend, external_id, is_final)
    assert (status.state, status.exit_code) == (JobState.TIMED_OUT, 124), status


async def check_reattachment(make_backend: Callable[[], Backend], jobs: JobFactory) -> None:
    """A fresh backend instance knows a running and a finished job of an old one by external id alone."""
    old = make_backend()
    running = await old.submit(jobs("long", blocking_body("long")))
    finished = await old.submit(jobs("short", "exit 0"))
    await wait_for_status(old, running, is_running)
    await wait_for_status(old, finished, is_final)
    del old  # no close(): as if the scheduler had died

    fresh = make_backend()
    statuses = await fresh.status([running, finished])
    assert statuses[running].state is JobState.RUNNING, statuses
    assert statuses[finished].state is JobState.SUCCEEDED, statuses
    jobs.release("long")
    status = await wait_for_status(fresh, running, is_final)
    assert status.state is JobState.SUCCEEDED, status
    assert "released long" in (jobs.root / "logs" / "long.log").read_text()
    await fresh.close()


async def check_cancel(backend: Backend, jobs: JobFactory) -> str:
    """cancel() stops a running job, which then reads CANCELLED; cancelling a finished job changes nothing."""
    victim = await backend.submit(jobs("victim", "sleep 60"))
    await wait_for_status(backend, victim, is_running)
    await backend.cancel(victim)
    status = await wait_for_status(backend, victim, is_final)
    assert status.state is JobState.CANCELLED, status

    done = await backend.submit(jobs("done", "exit 0"))
    await wait_for_status(backend, done, is_final)
    await backend.cancel(done)
    assert (await backend.status([done]))[done].state is JobState.SUCCEEDED
    return victim


async def check_batch_status(backend: Backend, jobs: JobFactory, unknown_id: str) -> Sequence[JobStatus]:
    """status() answers for several ids at once, an id the backend never ran reading LOST."""
    ids = [await backend.submit(jobs(f"batch-{i}", f"exit {i}")) for i in range(3)]
    for external_id in ids:
        await wait_for_status(backend, external_id, is_final)
    statuses = await backend.status([*ids, unknown_id])
    assert [statuses[i].exit_code for i in ids] == [0, 1, 2]
    assert statuses[unknown_id].state is JobState.LOST
    return list(statuses.values())
