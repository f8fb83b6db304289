"""The Slurm backend against a real single-node Slurm, brought up by scripts/slurm-up.sh (needs root)."""

from __future__ import annotations

import os
import subprocess
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
from services.scheduler.backends.commands import run_command
from services.scheduler.backends.slurm import SlurmBackend, sbatch_options
from services.scheduler.backends.wrapper import JobFiles

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = Path(os.environ.get("OBSFLOW_SLURM_DIR", "/var/lib/obsflow-slurm"))


@pytest.fixture(scope="session")
def slurm_conf() -> str:
    """Bring up Slurm with scripts/slurm-up.sh (idempotent) and return the SLURM_CONF it exported."""
    try:
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "slurm-up.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "OBSFLOW_SLURM_DIR": str(SLURM_DIR)},
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"scripts/slurm-up.sh did not finish within {e.timeout}s: {e.stderr!r}")
    if result.returncode != 0:
        pytest.fail(
            f"scripts/slurm-up.sh failed (exit {result.returncode}), so the Slurm backend cannot be tested:\n"
            f"{result.stderr[-4000:]}"
        )
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in (SLURM_DIR / "slurm.env").read_text().splitlines()
        if line.startswith("export ")
    )
    return exports["SLURM_CONF"]


@pytest.fixture
def jobs(tmp_path: Path):
    factory = JobFactory(tmp_path)
    yield factory
    factory.release_all()


@pytest.fixture
def backend(slurm_conf: str) -> SlurmBackend:
    return SlurmBackend(slurm_conf=slurm_conf)


async def test_success(backend, jobs):
    await check_success(backend, jobs)


async def test_failure(backend, jobs):
    await check_failure(backend, jobs)


async def test_timeout(backend, jobs):
    await check_timeout(backend, jobs)


async def test_reattachment_from_a_fresh_instance(slurm_conf, jobs):
    await check_reattachment(lambda: make_backend("slurm", slurm_conf=slurm_conf), jobs)


async def test_cancel(backend, jobs):
    await check_cancel(backend, jobs)


async def test_batch_status_with_a_job_slurm_never_had(backend, jobs, tmp_path):
    await check_batch_status(backend, jobs, f"99999999:{tmp_path}/never-ran.log")


async def test_resources_reach_slurm(backend, jobs, slurm_conf):
    spec = jobs("sized", "exit 0", ncpu=2, mem_mb=200, timeout_s=90)
    external_id = await backend.submit(spec)
    job_id = external_id.split(":", 1)[0]
    shown = (await run_command(["scontrol", "show", "job", "-o", job_id], extra_env={"SLURM_CONF": slurm_conf})).stdout
    assert "NumCPUs=2" in shown and "mem=200M" in shown and "TimeLimit=00:03:00" in shown, shown
    assert f"JobName={spec.key.replace('/', '_')}" in shown
    assert (await wait_for_status(backend, external_id, is_final)).state is JobState.SUCCEEDED


async def test_a_refused_job_is_a_submit_error_with_slurms_words(backend, jobs):
    with pytest.raises(JobSubmitError, match="(?i)invalid partition"):
        await backend.submit(jobs("misrouted", "exit 0", queue="nosuchpartition"))


def test_sbatch_options(tmp_path):
    spec = JobFactory(tmp_path)(
        "xrfi",
        "exit 0",
        ncpu=4,
        mem_mb=8000,
        timeout_s=3600,
        queue="hera",
        extra_batch_options="--gres=gpu:1 --account 'hera ops'",
    )
    argv = sbatch_options(spec, JobFiles(spec.log_path))
    for option in ("--cpus-per-task=4", "--mem=8000M", "--partition=hera", "--time=61", "--parsable"):
        assert option in argv
    assert argv[-3:] == ["--gres=gpu:1", "--account", "hera ops"]
