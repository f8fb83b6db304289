"""A scheduler process SIGKILLed with jobs in flight resumes them after a restart: nothing runs twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.planning import plan_run
from services.scheduler.runs.repository import insert_run
from shared.db import create_pool
from tests.conftest import wait_for
from tests.scheduler.runs_support import (  # noqa: F401  (delete_topology is a fixture)
    delete_topology,
    input_files,
    outbox_events,
    scheduler_settings,
    submissions,
    wait_finished,
    workflow_config,
    write_scripts,
)

pytestmark = pytest.mark.usefixtures("drop_schemas", "delete_topology")


async def _ready(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def _start(env: dict[str, str], ready_url: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", "service", "scheduler", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_for(lambda: _ready(ready_url), timeout_s=30, poll_s=0.1)
    return proc


async def test_sigkill_with_jobs_in_flight_then_restart(settings, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    gate = tmp_path / "gate"
    ledger = write_scripts(scripts, {
        "SETUP": "true",
        # Each CALIBRATE waits until the test opens its gate (no fixed sleeps).
        "CALIBRATE": f'while [ ! -e {gate}/"$1" ]; do sleep 0.05; done\necho ok > "$1.cal"',
        "COMBINE": "true",
        "TEARDOWN": "true",
    })
    gate.mkdir()
    files = input_files(tmp_path / "data", 2)
    s = scheduler_settings(settings, tmp_path / "var")
    env = {
        **os.environ, "OBSFLOW_SITE": s.site, "OBSFLOW_DATABASE_URL": s.database_url, "OBSFLOW_AMQP_URL": s.amqp_url,
        "OBSFLOW_BUS__PREFIX": s.bus.prefix, "OBSFLOW_HTTP_BASE_PORT": str(s.http_base_port),
        "OBSFLOW_LOG_FORMAT": "json", "OBSFLOW_DATA_DIR": str(s.data_dir),
        "OBSFLOW_SERVICES": json.dumps(s.services), "OBSFLOW_AUTH_SECRET": s.auth_secret.get_secret_value(),
    }
    ready_url = f"http://127.0.0.1:{s.http_port('scheduler')}/readyz"
    proc = await _start(env, ready_url)
    pool = await create_pool(s.database_url, s.schema_for("scheduler"))
    try:
        run = plan_run(workflow_config(scripts), files, SchedulerOptions.from_settings(s), workflow_name=None,
                       backend="local")
        async with pool.acquire() as conn, conn.transaction():
            await insert_run(conn, run, None)

        async def both_calibrations_running() -> bool:
            n = await pool.fetchval(
                "SELECT count(*) FROM attempts WHERE job_key LIKE 'CALIBRATE:%' AND external_id IS NOT NULL"
            )
            return n == 2

        await wait_for(both_calibrations_running, timeout_s=30, poll_s=0.05)
        proc.kill()  # SIGKILL: no clean-up at all
        await proc.wait()
        (gate / Path(files[0]).name).touch()  # one job finishes while no scheduler is running
        await wait_for(lambda: len(list((s.data_dir / "scheduler" / run.run_id).glob("*.cal"))) == 1, timeout_s=10)

        proc = await _start(env, ready_url)
        (gate / Path(files[1]).name).touch()  # the other finishes after the restart
        await wait_finished(pool, run.run_id, timeout_s=30)
        attempts = await pool.fetch("SELECT job_key, attempt, state FROM attempts WHERE run_id = $1", run.run_id)
        finished = await outbox_events(pool, "workflow.finished")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        for f in files:
            (gate / Path(f).name).touch()  # release anything still waiting
        await pool.close()

    ran = submissions(ledger)
    assert sorted(ran) == sorted(set(ran)), f"a job ran twice: {ran}"
    assert len(ran) == 5  # SETUP, 2 × CALIBRATE, COMBINE, TEARDOWN: each exactly once
    assert all(a["attempt"] == 1 and a["state"] == "succeeded" for a in attempts)
    assert finished and finished[0]["succeeded"] is True
