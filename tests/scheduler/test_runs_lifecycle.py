"""Where a run starts and ends: events older than a workflow start nothing, a retry that lands while a run is
being closed keeps it open, and job.done carries the outputs a task script declared. Real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import structlog

from services.scheduler.runs import repository
from services.scheduler.runs.dispatcher import Dispatcher
from services.scheduler.runs.domain import REFUSED, job_statuses, reset_round, run_outcome
from services.scheduler.runs.finishing import RunFinisher
from services.scheduler.runs.outputs import read_declared_outputs
from services.scheduler.runs.planning import plan_run
from services.scheduler.runs.triggers import RunTriggers
from services.scheduler.service import SPEC
from shared.db import apply_migrations, create_pool
from shared.events import Event, Payload, new_event
from shared.events.types import FileMinted, SessionClosed
from shared.settings import Settings
from tests.conftest import wait_for
from tests.scheduler.runs_support import input_files, outbox_events, run_options, workflow_config, write_scripts


@pytest.fixture
async def scheduler_pool(settings: Settings, drop_schemas: None) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the scheduler's schema with its migrations applied."""
    schema = settings.schema_for("scheduler")
    pool = await create_pool(settings.database_url, schema)
    await apply_migrations(pool, schema, SPEC.all_migrations)
    yield pool
    await pool.close()


def _make_event(settings: Settings):  # type: ignore[no-untyped-def]
    def make_event(payload: Payload) -> Event:
        return new_event(payload, site=settings.site, producer="scheduler")

    return make_event


async def test_events_from_before_a_workflow_was_registered_start_nothing(
    settings, scheduler_pool, tmp_path: Path
) -> None:
    pool, options = scheduler_pool, run_options(tmp_path)
    write_scripts(tmp_path / "scripts", {"CALIBRATE": "true"})
    config = workflow_config(tmp_path / "scripts", actions='["CALIBRATE"]')
    async with pool.acquire() as conn:
        await repository.register_workflow(conn, "nightly", config, "x", "session.closed", None, "local")
        await repository.register_workflow(conn, "rtp", config, "x", "file.minted", None, "local")
    registered = await pool.fetchval("SELECT registered_at FROM workflows WHERE name = 'nightly'")
    triggers = RunTriggers(options, site=settings.site)

    def closed(at: datetime) -> Event:
        payload = SessionClosed(session_id="n", start_jd=2459122.3, end_jd=2459122.4, file_names=["zen.1.uvh5"])
        return new_event(payload, site=settings.site, producer="catalog", occurred_at=at)

    def minted(at: datetime) -> Event:
        payload = FileMinted(name="zen.2.uvh5", size=1, checksum="x", file_type="uvh5", origin_site="karoo",
                             uploader="t", created_at=at, start_jd=2459122.3)
        return new_event(payload, site=settings.site, producer="catalog", occurred_at=at)

    last_month = registered - timedelta(days=20)
    async with pool.acquire() as conn, conn.transaction():  # a replay of the log, or a consumer days behind
        await triggers.on_session_closed(conn, closed(last_month))
        await triggers.on_file_minted(conn, minted(last_month))
    assert await pool.fetchval("SELECT count(*) FROM runs") == 0

    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        await triggers.on_session_closed(conn, closed(now))
        await triggers.on_file_minted(conn, minted(now))
    assert sorted(await pool.fetch("SELECT workflow_name FROM runs")) == [("nightly",), ("rtp",)]


async def test_a_trigger_starts_nothing_whose_scripts_left_the_script_roots(
    settings, scheduler_pool, tmp_path: Path
) -> None:
    pool, options = scheduler_pool, run_options(tmp_path)
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"CALIBRATE": "true"})
    async with pool.acquire() as conn:
        config = workflow_config(scripts, actions='["CALIBRATE"]')
        await repository.register_workflow(conn, "nightly", config, "x", "session.closed", None, "local")
    # Registered while fine; then the do-script became a link out of the root (or the root was removed).
    outside = tmp_path / "elsewhere.sh"
    outside.write_text("#!/bin/bash\ntouch canary\n")
    (scripts / "do_CALIBRATE.sh").unlink()
    (scripts / "do_CALIBRATE.sh").symlink_to(outside)
    payload = SessionClosed(session_id="n", start_jd=2459122.3, end_jd=2459122.4, file_names=["zen.1.uvh5"])
    with structlog.testing.capture_logs() as logs:
        async with pool.acquire() as conn, conn.transaction():
            triggers = RunTriggers(options, site=settings.site)
            await triggers.on_session_closed(conn, new_event(payload, site=settings.site, producer="x"))
    assert await pool.fetchval("SELECT count(*) FROM runs") == 0
    (refusal,) = [entry for entry in logs if entry["event"] == "run_not_started"]
    assert "do_CALIBRATE.sh" in refusal["error"] and "script_roots" in refusal["error"]


async def test_a_peer_sites_session_closed_and_file_minted_trigger_no_run_here(
    settings, scheduler_pool, tmp_path: Path
) -> None:
    pool, options = scheduler_pool, run_options(tmp_path)
    write_scripts(tmp_path / "scripts", {"CALIBRATE": "true"})
    config = workflow_config(tmp_path / "scripts", actions='["CALIBRATE"]')
    async with pool.acquire() as conn:
        await repository.register_workflow(conn, "nightly", config, "x", "session.closed", None, "local")
        await repository.register_workflow(conn, "rtp", config, "x", "file.minted", None, "local")
    triggers = RunTriggers(options, site=settings.site)
    now = datetime.now(UTC) + timedelta(seconds=1)

    def events(site: str) -> list[Event]:
        closed = SessionClosed(session_id="n", start_jd=2459122.3, end_jd=2459122.4, file_names=["zen.1.uvh5"])
        minted = FileMinted(name="zen.2.uvh5", size=1, checksum="x", file_type="uvh5", origin_site=site,
                            uploader="t", created_at=now, start_jd=2459122.3)
        return [new_event(closed, site=site, producer="catalog", occurred_at=now),
                new_event(minted, site=site, producer="ingest", occurred_at=now)]

    peer_closed, peer_minted = events("peer")  # as a peer's link brings them
    async with pool.acquire() as conn, conn.transaction():
        await triggers.on_session_closed(conn, peer_closed)
        await triggers.on_file_minted(conn, peer_minted)
    assert await pool.fetchval("SELECT count(*) FROM runs") == 0
    own_closed, own_minted = events(settings.site)  # the same facts of this site do start runs
    async with pool.acquire() as conn, conn.transaction():
        await triggers.on_session_closed(conn, own_closed)
        await triggers.on_file_minted(conn, own_minted)
    assert sorted(await pool.fetch("SELECT workflow_name FROM runs")) == [("nightly",), ("rtp",)]


async def test_a_retry_committed_while_the_run_is_being_closed_keeps_it_open(
    settings, scheduler_pool, tmp_path: Path
) -> None:
    pool, options = scheduler_pool, run_options(tmp_path)
    write_scripts(tmp_path / "scripts", {"CALIBRATE": "true"})
    run = plan_run(workflow_config(tmp_path / "scripts", actions='["CALIBRATE"]'), ["zen.1.uvh5"], options,
                   workflow_name=None, backend="local")
    (key,) = [job.key for job in run.jobs]
    async with pool.acquire() as conn, conn.transaction():
        await repository.insert_run(conn, run, None)
        await repository.start_attempt(conn, run.run_id, key, 1, "local", "/tmp/x.log")
        await repository.end_attempt(conn, run.run_id, key, 1, REFUSED, detail="no such queue")
    await repository.set_provenance(pool, run.run_id, {"run_id": run.run_id})
    finisher = RunFinisher(pool, options, _make_event(settings))
    ended = run_outcome(job_statuses(await repository.run_facts(pool, run.run_id)))
    assert ended.finished and not ended.succeeded

    # The dispatcher decided the run has ended; before it closes the run, a retry request commits.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM runs WHERE run_id = $1 FOR UPDATE", run.run_id)
        await repository.reopen_run(conn, run.run_id, reset_round(await repository.run_facts(conn, run.run_id), True))
    await finisher.finish(run.run_id, ended)
    assert await pool.fetchval("SELECT finished_at FROM runs") is None
    assert await outbox_events(pool, "workflow.finished") == []

    # Without a retry in between, the same call closes the run (once).
    async with pool.acquire() as conn, conn.transaction():
        await repository.start_attempt(conn, run.run_id, key, 2, "local", "/tmp/x.log")
        await repository.end_attempt(conn, run.run_id, key, 2, REFUSED, detail="no such queue")
    await finisher.finish(run.run_id, ended)
    await finisher.finish(run.run_id, ended)
    assert await pool.fetchval("SELECT finished_at FROM runs") is not None
    assert len(await outbox_events(pool, "workflow.finished")) == 1


async def test_job_done_carries_the_outputs_the_script_declared(settings, scheduler_pool, tmp_path: Path) -> None:
    pool = scheduler_pool
    options = run_options(tmp_path, poll_interval_s=0.05, backend_options={"local": {"total_cpus": 2}})
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {
        "SETUP": "echo setup > setup.done",  # declares nothing
        "CALIBRATE": 'echo cal > "$1.cal"\necho "$1.cal" >> "$OBSFLOW_OUTPUTS_FILE"\n'
                     'echo "$(pwd)/$1.flags" >> "$OBSFLOW_OUTPUTS_FILE"\ntouch "$1.flags"\n'
                     'echo "never-written.txt" >> "$OBSFLOW_OUTPUTS_FILE"',
    })
    files = input_files(tmp_path / "data", 2)
    run = plan_run(workflow_config(scripts, actions='["SETUP", "CALIBRATE"]'), files, options,
                   workflow_name=None, backend="local")
    async with pool.acquire() as conn, conn.transaction():
        await repository.insert_run(conn, run, None)
    await repository.set_provenance(pool, run.run_id, {"run_id": run.run_id})
    dispatcher, stop = Dispatcher(pool, "x", options, _make_event(settings), shutdown_grace_s=5.0), asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await wait_for(lambda: pool.fetchval("SELECT finished_at IS NOT NULL FROM runs"), timeout_s=30)
    finally:
        stop.set()
        await task
    workdir = Path(run.workdir)
    done = {e["job_id"]: e["outputs"] for e in await outbox_events(pool, "job.done")}
    assert done.pop("SETUP") == []
    assert done == {
        f"CALIBRATE:{Path(f).name}": [str(workdir / f"{Path(f).name}.cal"), str(workdir / f"{Path(f).name}.flags")]
        for f in files
    }


def test_declared_outputs_are_read_relative_to_the_work_directory(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "CALIBRATE_a.1.log"
    log_path.parent.mkdir()
    assert read_declared_outputs(log_path) == []  # nothing declared: no outputs, never a guess
    (tmp_path / "a.cal").write_text("x")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other.txt"
    elsewhere.write_text("x")
    log_path.with_suffix(".outputs").write_text(f"a.cal\n\n./a.cal\n{elsewhere}\nmissing.txt\n")
    assert read_declared_outputs(log_path) == [str(tmp_path / "a.cal"), str(elsewhere)]
