"""The same workflow end to end on PBS/TORQUE (fake qsub/qstat/qdel) and on a real single-node Slurm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.planning import plan_run
from services.scheduler.runs.repository import insert_run
from services.scheduler.runs.views import run_detail
from tests.scheduler.runs_support import (  # noqa: F401  (delete_topology is a fixture)
    STANDARD_SCRIPTS,
    delete_topology,
    input_files,
    running_scheduler,
    scheduler_settings,
    submissions,
    wait_finished,
    workflow_config,
    write_scripts,
)

pytestmark = pytest.mark.usefixtures("drop_schemas", "delete_topology")

REPO = Path(__file__).resolve().parents[2]
FAKE_PBS = Path(__file__).resolve().parent / "fake_pbs"
SLURM_DIR = Path(os.environ.get("OBSFLOW_SLURM_DIR", "/var/lib/obsflow-slurm"))


@pytest.fixture(scope="session")
def slurm_conf() -> str:
    """Bring up Slurm with scripts/slurm-up.sh (idempotent) and return the SLURM_CONF it exported."""
    try:
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "slurm-up.sh")], capture_output=True, text=True, timeout=900,
            env={**os.environ, "OBSFLOW_SLURM_DIR": str(SLURM_DIR)},
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"scripts/slurm-up.sh did not finish within {e.timeout}s: {e.stderr!r}")
    if result.returncode != 0:
        pytest.fail(f"scripts/slurm-up.sh failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in (SLURM_DIR / "slurm.env").read_text().splitlines()
        if line.startswith("export ")
    )
    return exports["SLURM_CONF"]


async def _run_workflow(settings, tmp_path: Path, backend: str, queue: str, backend_options: dict) -> None:
    scripts = tmp_path / "scripts"
    ledger = write_scripts(scripts, STANDARD_SCRIPTS)
    files = input_files(tmp_path / "data", 3)
    s = scheduler_settings(settings, tmp_path / "var", backend=backend, backend_options={backend: backend_options})
    async with running_scheduler(s) as runner:
        pool = runner.ctx.pool
        run = plan_run(workflow_config(scripts, queue=queue), files, SchedulerOptions.from_settings(s),
                       workflow_name="nightly", backend=backend)
        async with pool.acquire() as conn, conn.transaction():
            await insert_run(conn, run, None)
        await wait_finished(pool, run.run_id, timeout_s=60)
        detail = await run_detail(pool, run.run_id)
    assert detail is not None and detail.state == "succeeded", detail
    assert detail.backend == backend
    assert sorted(submissions(ledger)) == sorted(j.job_key for j in detail.jobs)
    assert _products(Path(detail.workdir)) == (3, 0)
    prov = detail.provenance
    assert prov is not None and prov["succeeded"]
    assert all(a[0]["host"] and a[0]["log_path"] for a in prov["jobs"].values())


def _products(workdir: Path) -> tuple[int, int]:
    return len(list(workdir.glob("*.cal"))), len(list(workdir.glob("*.tmp")))


async def test_workflow_on_pbs(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKE_PBS}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PBS_HOME", str(tmp_path / "pbs-server"))
    monkeypatch.setenv("FAKE_PBS_QUEUES", "batch,hera")
    await _run_workflow(settings, tmp_path, "pbs", "hera", {})


@pytest.mark.slurm
async def test_workflow_on_slurm(settings, tmp_path: Path, slurm_conf: str) -> None:
    await _run_workflow(settings, tmp_path, "slurm", "main", {"slurm_conf": slurm_conf})
