"""The run engine end to end on the local backend: API-started and event-started runs, retries, timeouts,
failures that block only their dependants, provenance and cleanup."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.planning import plan_run
from services.scheduler.runs.repository import insert_run, register_workflow
from shared.bus import publish_event
from shared.events import new_event
from shared.events.types import FileMinted, SessionClosed
from tests.scheduler.runs_support import (  # noqa: F401  (delete_topology is a fixture)
    STANDARD_SCRIPTS,
    delete_topology,
    input_files,
    outbox_events,
    running_scheduler,
    scheduler_settings,
    submissions,
    token,
    wait_finished,
    workflow_config,
    write_scripts,
)

pytestmark = pytest.mark.usefixtures("drop_schemas", "delete_topology")


async def test_workflow_runs_end_to_end_with_provenance_and_cleanup(settings, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    ledger = write_scripts(scripts, STANDARD_SCRIPTS)
    files = input_files(tmp_path / "data", 3)
    s = scheduler_settings(settings, tmp_path / "var")
    base = f"http://127.0.0.1:{s.http_port('scheduler')}/api/v1"
    headers = {"Authorization": f"Bearer {token(s)}"}
    async with running_scheduler(s, http=True) as runner, aiohttp.ClientSession(headers=headers) as http:
        pool = runner.ctx.pool
        async with http.post(f"{base}/runs", json={"config_text": workflow_config(scripts), "files": files}) as r:
            assert r.status == 201, await r.text()
            run_id = (await r.json())["run_id"]
        await wait_finished(pool, run_id)
        async with http.get(f"{base}/runs/{run_id}") as r:
            detail = await r.json()
        finished = await outbox_events(pool, "workflow.finished")

    assert detail["state"] == "succeeded", detail
    keys = [j["job_key"] for j in detail["jobs"]]
    # 3 files: CALIBRATE per file, COMBINE on chunks of 2 with the straggler folded in: one (time-centred) chunk.
    assert keys == [
        "SETUP", "CALIBRATE:zen.2459122.30000.sum.uvh5", "CALIBRATE:zen.2459122.30018.sum.uvh5",
        "COMBINE:zen.2459122.30018.sum.uvh5", "CALIBRATE:zen.2459122.30036.sum.uvh5", "TEARDOWN",
    ]
    assert all(j["state"] == "succeeded" for j in detail["jobs"])
    assert sorted(submissions(ledger)) == sorted(keys)  # every job ran exactly once
    # SETUP ran first, TEARDOWN last, COMBINE after every CALIBRATE.
    order = submissions(ledger)
    assert order[0] == "SETUP" and order[-1] == "TEARDOWN"
    assert order.index(keys[3]) > max(order.index(k) for k in keys if k.startswith("CALIBRATE"))

    workdir = Path(detail["workdir"])
    assert workdir == tmp_path / "var" / "scheduler" / run_id
    _check_products(workdir, files, run_id)

    prov = detail["provenance"]
    assert prov["config_text"] == workflow_config(scripts) and len(prov["config_sha256"]) == 64
    assert prov["inputs"] == files
    assert prov["software"]["pip_freeze"], prov["software"]
    assert prov["succeeded"] is True and sorted(prov["removed_temporary_products"]) == [
        f"{Path(f).name}.tmp" for f in files
    ]
    setup = prov["jobs"]["SETUP"][0]
    assert setup["host"] and setup["submitted_at"] and setup["ended_at"] and setup["log_path"].endswith("SETUP.1.log")
    assert finished == [{"run_id": run_id, "workflow": "adhoc", "succeeded": True, "jobs": 6, "failed_jobs": 0}]


def _check_products(workdir: Path, files: list[str], run_id: str) -> None:
    assert sorted(p.name for p in workdir.glob("*.cal")) == [f"{Path(f).name}.cal" for f in files]
    assert (workdir / "combined.zen.2459122.30000.sum.uvh5.txt").read_text().split() == files
    assert (workdir / "teardown.done").read_text().strip() == run_id
    assert not list(workdir.glob("*.tmp")), "temporary products are removed after a successful run"
    assert all(Path(f).exists() for f in files), "inputs are untouched"
    assert (workdir / "logs" / "SETUP.1.log").exists() and (workdir / "provenance.json").exists()


async def test_session_closed_starts_the_registered_workflow_once(settings, tmp_path: Path, amqp) -> None:
    scripts = tmp_path / "scripts"
    ledger = write_scripts(scripts, STANDARD_SCRIPTS)
    files = input_files(tmp_path / "data", 2)
    config = workflow_config(scripts, extra_options=f'obsflow_input_dir = "{tmp_path / "data"}"')
    s = scheduler_settings(settings, tmp_path / "var")
    async with running_scheduler(s) as runner:
        pool = runner.ctx.pool
        async with pool.acquire() as conn:
            await register_workflow(conn, "nightly", config, "x", "session.closed", None, "local")
        closed = new_event(  # after the registration: older events start nothing for this workflow
            SessionClosed(
                session_id="night-1", start_jd=2459122.3, end_jd=2459122.31, file_names=[Path(f).name for f in files]
            ),
            site=s.site, producer="catalog",
        )
        channel = await amqp.channel()
        exchange = await channel.get_exchange(f"{s.bus.prefix}.events")
        await publish_event(exchange, closed)
        await publish_event(exchange, closed)  # a duplicate delivery starts nothing new
        await runner.parts.stream_consumers[0].drain(20)
        run_ids = [r["run_id"] for r in await pool.fetch("SELECT run_id FROM runs")]
        assert len(run_ids) == 1
        await wait_finished(pool, run_ids[0])
        started = await outbox_events(pool, "job.started")
        done = await outbox_events(pool, "job.done")
    assert len(submissions(ledger)) == 5  # SETUP, 2 × CALIBRATE, COMBINE, TEARDOWN
    assert len(started) == len(done) == 5
    assert {e["action"] for e in done} == {"SETUP", "CALIBRATE", "COMBINE", "TEARDOWN"}


async def test_file_minted_starts_matching_realtime_workflows(settings, tmp_path: Path, amqp) -> None:
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"CALIBRATE": 'echo "$1" > "$1.cal"'})
    config = workflow_config(scripts, actions='["CALIBRATE"]')
    s = scheduler_settings(settings, tmp_path / "var")

    def minted(name: str, file_type: str) -> object:
        return new_event(
            FileMinted(name=name, size=10, checksum="x", file_type=file_type, origin_site="karoo", uploader="t",
                       created_at=datetime(2026, 1, 1, tzinfo=UTC), start_jd=2459122.3),
            site=s.site, producer="ingest",
        )

    async with running_scheduler(s) as runner:
        pool = runner.ctx.pool
        async with pool.acquire() as conn:
            match = {"and": [{"file_type": {"is": "uvh5"}}, {"name": {"matches": "zen.%.sum.uvh5"}}]}
            await register_workflow(conn, "rtp", config, "x", "file.minted", match, "local")
        channel = await amqp.channel()
        exchange = await channel.get_exchange(f"{s.bus.prefix}.events")
        for event in (minted("zen.2459122.30000.sum.uvh5", "uvh5"), minted("zen.2459122.30000.diff.uvh5", "uvh5"),
                      minted("zen.2459122.30000.sum.npz", "npz")):
            await publish_event(exchange, event)
        await runner.parts.stream_consumers[0].drain(20)
        runs = await pool.fetch("SELECT run_id, input_files FROM runs")
        assert [r["input_files"] for r in runs] == ['["zen.2459122.30000.sum.uvh5"]']
        await wait_finished(pool, runs[0]["run_id"])


async def test_retry_timeout_and_failure_blocks_only_dependants(settings, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    flaky_marker = tmp_path / "flaky-once"
    ledger = write_scripts(scripts, {
        "SETUP": "true",
        # Fails the first time, succeeds the second.
        "CALIBRATE": f'if [ "$1" = zen.2459122.30000.sum.uvh5 ] && [ ! -e {flaky_marker} ]; then\n'
                     f'  touch {flaky_marker}; exit 3\nfi\n'
                     'if [ "$1" = zen.2459122.30036.sum.uvh5 ]; then sleep 30; fi\n'
                     'if [ "$1" = zen.2459122.30054.sum.uvh5 ]; then exit 7; fi\n'
                     'echo ok > "$1.cal"',
        "COMBINE": 'echo "$@" > "combined.$(basename "$1").txt"',
        "TEARDOWN": "true",
    })
    files = input_files(tmp_path / "data", 4)
    config = workflow_config(scripts, timeout="1", extra_options="obsflow_max_attempts = 2")
    s = scheduler_settings(settings, tmp_path / "var")
    async with running_scheduler(s) as runner:
        pool = runner.ctx.pool
        run = plan_run(config, files, SchedulerOptions.from_settings(s), workflow_name=None, backend="local")
        async with pool.acquire() as conn, conn.transaction():
            await insert_run(conn, run, None)
        await wait_finished(pool, run.run_id, timeout_s=40)
        failed = await outbox_events(pool, "job.failed")
        finished = await outbox_events(pool, "workflow.finished")
        states = {r["job_key"]: r["state"] for r in await pool.fetch(
            "SELECT DISTINCT ON (job_key) job_key, state FROM attempts WHERE run_id = $1"
            " ORDER BY job_key, attempt DESC",
            run.run_id,
        )}
    ran = submissions(ledger)
    first, third, fourth = (f"CALIBRATE:{Path(f).name}" for f in (files[0], files[2], files[3]))
    assert ran.count(first) == 2 and states[first] == "succeeded"  # retried once, then fine
    assert ran.count(third) == 2 and states[third] == "timed_out"  # timed out twice: out of attempts
    assert ran.count(fourth) == 2 and states[fourth] == "failed"
    # COMBINE of files 0-1 ran; COMBINE of files 2-3 and TEARDOWN are blocked and never ran.
    assert f"COMBINE:{Path(files[1]).name}" in ran
    assert f"COMBINE:{Path(files[3]).name}" not in ran and "TEARDOWN" not in ran
    retries = [(e["job_id"], e["attempt"], e["will_retry"]) for e in failed]
    assert (first, 1, True) in retries and (third, 2, False) in retries and (fourth, 2, False) in retries
    assert any(e["job_id"] == third and "time limit" in e["reason"] for e in failed)
    assert finished[0]["succeeded"] is False and finished[0]["failed_jobs"] == 2

