"""The PBS/TORQUE backend against fake qsub/qstat/qdel (tests/scheduler/fake_pbs) that behave like TORQUE."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from backend_matrix import (
    JobFactory,
    check_batch_status,
    check_cancel,
    check_failure,
    check_reattachment,
    check_success,
    check_timeout,
    is_final,
    wait_for_status,
)

from services.scheduler.backends import JobState, JobSubmitError, make_backend
from services.scheduler.backends.pbs import PbsBackend, qsub_options
from services.scheduler.backends.wrapper import JobFiles

FAKE_PBS = Path(__file__).resolve().parent / "fake_pbs"


@pytest.fixture
def fake_pbs_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the fake TORQUE commands first on PATH (run by this venv's python3), with their own state."""
    home = tmp_path / "pbs-server"
    monkeypatch.setenv("PATH", f"{FAKE_PBS}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PBS_HOME", str(home))
    monkeypatch.setenv("FAKE_PBS_QUEUES", "batch,hera")
    return home


@pytest.fixture
def jobs(tmp_path: Path, fake_pbs_home: Path):
    factory = JobFactory(tmp_path / "jobs")
    yield factory
    factory.release_all()


@pytest.fixture
def backend(fake_pbs_home: Path) -> PbsBackend:
    return PbsBackend()


async def test_success(backend, jobs):
    await check_success(backend, jobs)


async def test_failure(backend, jobs):
    await check_failure(backend, jobs)


async def test_timeout(backend, jobs):
    await check_timeout(backend, jobs)


async def test_reattachment_from_a_fresh_instance(jobs):
    await check_reattachment(lambda: make_backend("pbs"), jobs)


async def test_cancel(backend, jobs):
    await check_cancel(backend, jobs)


async def test_batch_status_takes_one_qstat_call(backend, jobs, fake_pbs_home, tmp_path):
    await check_batch_status(backend, jobs, f"999.fakeserver:{tmp_path}/never-ran.log")
    calls = (fake_pbs_home / "qstat.calls").read_text().splitlines()
    assert len(calls[-1].split()) == 1 + 4, calls[-1]  # "-f" and the four ids, in one call


async def test_a_job_the_server_forgot_reads_from_its_exit_status_file(backend, jobs, monkeypatch):
    ok = await backend.submit(jobs("ok", "exit 0"))
    failed = await backend.submit(jobs("failed", "exit 5"))
    for external_id in (ok, failed):
        await wait_for_status(backend, external_id, is_final)
    monkeypatch.setenv("FAKE_PBS_KEEP_COMPLETED", "-1")  # qstat now answers "Unknown Job Id" for both
    statuses = await backend.status([ok, failed])
    assert (statuses[ok].state, statuses[failed].state) == (JobState.SUCCEEDED, JobState.FAILED)
    assert statuses[failed].exit_code == 5


async def test_a_refused_job_is_a_submit_error_with_the_servers_words(backend, jobs):
    with pytest.raises(JobSubmitError, match="Unknown queue"):
        await backend.submit(jobs("misrouted", "exit 0", queue="nosuchqueue"))
    with pytest.raises(JobSubmitError, match="invalid option"):
        await backend.submit(jobs("odd", "exit 0", extra_batch_options="--no-such-flag x"))


async def test_queue_and_extra_options_reach_qsub(backend, jobs):
    external_id = await backend.submit(jobs("routed", "exit 0", queue="hera", extra_batch_options="-A hera-ops"))
    assert (await wait_for_status(backend, external_id, is_final)).state is JobState.SUCCEEDED


def test_qsub_options_follow_hera_opm(tmp_path):
    spec = JobFactory(tmp_path)("xrfi", "exit 0", ncpu=4, mem_mb=8000, timeout_s=3600, queue="hera")
    argv = qsub_options(spec, JobFiles(spec.log_path))
    assert argv[argv.index("-l") + 1] == "vmem=8000M,mem=8000M,nodes=1:ppn=4"
    assert "walltime=01:01:00" in argv
    assert argv[argv.index("-q") + 1] == "hera"
    assert argv[argv.index("-N") + 1] == "XRFI"
