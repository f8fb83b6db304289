"""The local process-pool backend: the backend contract, its CPU/memory budget, and surviving a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from backend_matrix import (
    JobFactory,
    blocking_body,
    check_batch_status,
    check_cancel,
    check_failure,
    check_reattachment,
    check_success,
    check_timeout,
    is_final,
    is_running,
    wait_for_status,
)

from services.scheduler.backends import JobState, JobSubmitError, make_backend
from services.scheduler.backends.commands import run_command
from services.scheduler.backends.local import LocalBackend, LocalJob

REPO = Path(__file__).resolve().parents[2]
# These tests run as root, as the machine's test suite does: the backend then runs jobs only when told to run
# them as root. Jobs as an unprivileged account, and the refusal, are test_backend_local_user.py's.
AS_ROOT = {"allow_root": True}


@pytest.fixture
def jobs(tmp_path: Path):
    factory = JobFactory(tmp_path)
    yield factory
    factory.release_all()


@pytest.fixture
async def backend():
    pool = LocalBackend(total_cpus=4, total_mem_mb=4000, **AS_ROOT)
    yield pool
    await pool.close()


async def test_success(backend, jobs):
    await check_success(backend, jobs)


async def test_source_script_with_a_tilde_means_home_like_hera_opm(backend, jobs, tmp_path):
    (tmp_path / "setup.sh").write_text("export FROM_HOME=yes\n")
    spec = jobs("tilde", 'echo "from home: $FROM_HOME"', source_script="~/setup.sh", env={"HOME": str(tmp_path)})
    status = await wait_for_status(backend, await backend.submit(spec), is_final)
    assert status.state is JobState.SUCCEEDED, spec.log_path.read_text()
    assert "from home: yes" in spec.log_path.read_text()


async def test_failure(backend, jobs):
    await check_failure(backend, jobs)


async def test_timeout(backend, jobs):
    await check_timeout(backend, jobs)


async def test_reattachment_from_a_fresh_instance(jobs):
    await check_reattachment(lambda: LocalBackend(total_cpus=4, total_mem_mb=4000, **AS_ROOT), jobs)


async def test_cancel_stops_the_whole_job(backend, jobs):
    victim = await check_cancel(backend, jobs)
    # the do-script ran `sleep 60` under the wrapper: nothing of that session may survive the cancel
    session = str(LocalJob.parse(victim).pid)
    ps = (await run_command(["ps", "-o", "pid=,stat=", "-s", session])).stdout
    leftover = [line for line in ps.splitlines() if "Z" not in line.split()[1]]  # zombies await init's reaping
    assert not leftover, f"processes of the cancelled job survived: {leftover}"


async def test_batch_status_and_an_unknown_pid(backend, jobs, tmp_path):
    # our own pid with the wrong start time: a reused pid must not pass for the job
    imposter = LocalJob(os.getpid(), 1, 1, 1, LocalJob.parse(f"1:1:1:1:{tmp_path}/x.log").files).external_id
    await check_batch_status(backend, jobs, imposter)


async def test_cpu_budget_holds_jobs_until_room_frees(jobs):
    pool = LocalBackend(total_cpus=2, total_mem_mb=10_000, **AS_ROOT)
    first = await pool.submit(jobs("a", blocking_body("a")))
    second = await pool.submit(jobs("b", blocking_body("b")))
    third = asyncio.create_task(pool.submit(jobs("c", blocking_body("c"))))
    with pytest.raises(TimeoutError):  # no room: the third job must not start
        await asyncio.wait_for(asyncio.shield(third), 0.3)
    assert pool.used == (2, 200)
    assert not (jobs.root / "logs" / "c.log").exists()

    jobs.release("a")
    third_id = await asyncio.wait_for(third, 10)
    assert (await pool.status([first]))[first].state is JobState.SUCCEEDED
    assert pool.used == (2, 200)
    jobs.release("b")
    jobs.release("c")
    for external_id in (second, third_id):
        assert (await wait_for_status(pool, external_id, is_final)).state is JobState.SUCCEEDED
    assert pool.used == (0, 0)


async def test_memory_budget_and_impossible_jobs(jobs):
    pool = LocalBackend(total_cpus=8, total_mem_mb=1000, **AS_ROOT)
    big = await pool.submit(jobs("big", blocking_body("big"), mem_mb=600))
    waiting = asyncio.create_task(pool.submit(jobs("big2", "exit 0", mem_mb=600)))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiting), 0.3)
    jobs.release("big")
    await wait_for_status(pool, await asyncio.wait_for(waiting, 10), is_final)
    await wait_for_status(pool, big, is_final)

    with pytest.raises(JobSubmitError, match="local pool has 8 CPUs"):
        await pool.submit(jobs("huge", "exit 0", ncpu=9))
    with pytest.raises(JobSubmitError, match="not executable"):
        await pool.submit(jobs("missing", "exit 0", do_script=jobs.root / "do" / "do_NOPE.sh"))


async def test_a_restarted_pool_counts_the_old_jobs_against_its_budget(jobs):
    old = LocalBackend(total_cpus=1, total_mem_mb=1000, **AS_ROOT)
    running = await old.submit(jobs("old", blocking_body("old")))
    del old
    fresh = LocalBackend(total_cpus=1, total_mem_mb=1000, **AS_ROOT)
    assert (await fresh.status([running]))[running].state is JobState.RUNNING  # adopts it
    waiting = asyncio.create_task(fresh.submit(jobs("new", "exit 0")))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiting), 0.3)
    jobs.release("old")
    await wait_for_status(fresh, await asyncio.wait_for(waiting, 10), is_final)


async def test_jobs_survive_a_sigkilled_scheduler(jobs, tmp_path):
    """A scheduler process submits a job and dies by SIGKILL; a new one finds the job by its id."""
    spec = jobs("orphan", blocking_body("orphan"))
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from services.scheduler.backends.local import LocalBackend
        from services.scheduler.backends.base import JobSpec

        async def main():
            external_id = await LocalBackend(total_cpus=1, allow_root=True).submit(JobSpec(
                key="run-1/ORPHAN/orphan", action="ORPHAN", args=[], workdir=Path({str(spec.workdir)!r}),
                log_path=Path({str(spec.log_path)!r}), ncpu=1, mem_mb=10, queue=None, timeout_s=None,
                extra_batch_options=None, do_script=Path({str(spec.do_script)!r}), source_script=None,
                conda_env=None))
            print(external_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    scheduler = await run_command([sys.executable, "-c", script], extra_env={"PYTHONPATH": str(REPO)})
    assert scheduler.returncode == -signal.SIGKILL, scheduler.stderr
    external_id = scheduler.stdout.strip().splitlines()[-1]

    fresh = make_backend("local", total_cpus=1, **AS_ROOT)
    await wait_for_status(fresh, external_id, is_running)
    jobs.release("orphan")
    status = await wait_for_status(fresh, external_id, is_final)
    assert status.state is JobState.SUCCEEDED, status


async def test_a_killed_job_without_exit_status_is_lost(backend, jobs):
    external_id = await backend.submit(jobs("doomed", blocking_body("doomed")))
    await wait_for_status(backend, external_id, is_running)
    os.killpg(LocalJob.parse(external_id).pid, signal.SIGKILL)  # e.g. the OOM killer, or a reboot
    status = (await backend.status([external_id]))[external_id]
    deadline = asyncio.get_running_loop().time() + 10
    while status.state is JobState.RUNNING and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        status = (await backend.status([external_id]))[external_id]
    assert status.state is JobState.LOST, status
    assert status.detail and "resubmit" in status.detail
