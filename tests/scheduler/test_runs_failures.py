"""The dispatcher when things go wrong around a submission: the database failing right after the backend
accepted a job, a backend that raises something unexpected, bad backend options, and a stop (SIGTERM)
while a submission is under way. Real PostgreSQL; the batch backend is a small fake defined here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from services.scheduler.backends import JobSpec, JobState, JobStatus
from services.scheduler.runs.dispatcher import Dispatcher
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.planning import plan_run
from services.scheduler.runs.repository import insert_run, set_provenance
from services.scheduler.runs.submission import BackendPool
from services.scheduler.service import SPEC
from shared.db import apply_migrations, create_pool
from shared.errors import ConfigurationError
from shared.events import Payload, new_event
from shared.settings import Settings
from tests.conftest import wait_for
from tests.scheduler.runs_support import input_files, outbox_events, run_options, workflow_config, write_scripts

AS_ROOT = {"allow_root": True}  # the tests run as root; a local backend refuses root unless told


class FakeBackend:
    """A batch system in memory: `submit` does what the test says, `status` reports jobs running or done."""

    name = "local"

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.finished: set[str] = set()
        self.status_calls = 0
        self.submit_error: Exception | None = None
        self.status_error: Exception | None = None
        self.hold_until: asyncio.Event | None = None  # submit waits for this, then takes a little longer

    async def submit(self, spec: JobSpec) -> str:
        if self.submit_error is not None:
            raise self.submit_error
        if self.hold_until is not None:
            await self.hold_until.wait()
            await asyncio.sleep(0.3)  # sbatch still talking to the controller after the stop
        self.submitted.append(spec.key)
        return f"fake-{len(self.submitted)}"

    async def status(self, external_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.status_calls += 1
        if self.status_error is not None:
            raise self.status_error
        return {
            i: JobStatus(JobState.SUCCEEDED if i in self.finished else JobState.RUNNING, 0, "fakehost")
            for i in external_ids
        }

    async def cancel(self, external_id: str) -> None:
        self.finished.add(external_id)

    async def close(self) -> None:
        return None


@pytest.fixture
async def scheduler_pool(settings: Settings, drop_schemas: None) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the scheduler's schema with its migrations applied."""
    schema = settings.schema_for("scheduler")
    pool = await create_pool(settings.database_url, schema)
    await apply_migrations(pool, schema, SPEC.all_migrations)
    yield pool
    await pool.close()


def _options(tmp_path: Path) -> SchedulerOptions:
    return run_options(tmp_path, poll_interval_s=0.05, max_attempts=2)


async def _one_job_run(pool: asyncpg.Pool, tmp_path: Path, options: SchedulerOptions) -> str:
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"CALIBRATE": "true"})
    run = plan_run(workflow_config(scripts, actions='["CALIBRATE"]'), input_files(tmp_path / "data", 1), options,
                   workflow_name=None, backend="local")
    async with pool.acquire() as conn, conn.transaction():
        await insert_run(conn, run, None)
    await set_provenance(pool, run.run_id, {"run_id": run.run_id})  # no pip freeze in these tests
    return run.run_id


def _dispatcher(pool: asyncpg.Pool, settings: Settings, options: SchedulerOptions, fake: FakeBackend) -> Dispatcher:
    def make_event(payload: Payload):  # type: ignore[no-untyped-def]
        return new_event(payload, site=settings.site, producer="scheduler")

    backends = BackendPool(options, {"local": fake})
    return Dispatcher(pool, settings.schema_for("scheduler"), options, make_event, shutdown_grace_s=5.0,
                      backends=backends)


async def _attempts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT job_key, attempt, state, external_id, detail FROM attempts ORDER BY attempt")


async def test_external_id_is_stored_after_the_database_failed_once_the_backend_accepted(
    settings, scheduler_pool, tmp_path: Path
) -> None:
    pool, options, fake = scheduler_pool, _options(tmp_path), FakeBackend()
    # Storing an external id fails (counted by a sequence, which a rollback does not undo) until the test lifts it.
    await pool.execute(
        "CREATE SEQUENCE store_failures;"
        " CREATE FUNCTION fail_store() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM nextval('store_failures'); RAISE EXCEPTION 'injected: database failing'; END $$;"
        " CREATE TRIGGER fail_store BEFORE UPDATE ON attempts FOR EACH ROW"
        " WHEN (NEW.external_id IS NOT NULL) EXECUTE FUNCTION fail_store()"
    )
    await _one_job_run(pool, tmp_path, options)
    dispatcher, stop = _dispatcher(pool, settings, options, fake), asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await wait_for(lambda: pool.fetchval(
            "SELECT is_called AND last_value >= 2 FROM store_failures"), timeout_s=20)
        assert [a["state"] for a in await _attempts(pool)] == ["submitting"]
        await pool.execute("DROP TRIGGER fail_store ON attempts")

        async def id_stored() -> bool:
            return [(a["state"], a["external_id"]) for a in await _attempts(pool)] in (
                [("submitted", "fake-1")], [("running", "fake-1")]
            )

        await wait_for(id_stored, timeout_s=20)
        fake.finished.add("fake-1")
        await wait_for(lambda: pool.fetchval("SELECT finished_at IS NOT NULL FROM runs"), timeout_s=20)
    finally:
        stop.set()
        await task
    assert len(fake.submitted) == 1  # submitted once, never again
    assert len(await outbox_events(pool, "job.started")) == 1
    assert len(await outbox_events(pool, "job.done")) == 1


async def test_an_unexpected_submit_error_fails_the_attempt_with_its_class_and_message(
    settings, scheduler_pool, tmp_path: Path
) -> None:
    pool, options, fake = scheduler_pool, _options(tmp_path), FakeBackend()
    fake.submit_error = TypeError("submit() got an unexpected keyword argument 'partition'")
    run_id = await _one_job_run(pool, tmp_path, options)
    dispatcher, stop = _dispatcher(pool, settings, options, fake), asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await wait_for(lambda: pool.fetchval("SELECT finished_at IS NOT NULL FROM runs"), timeout_s=20)
    finally:
        stop.set()
        await task
    attempts = await _attempts(pool)
    assert [a["state"] for a in attempts] == ["failed", "failed"]  # max_attempts = 2, then the job failed
    assert all(
        a["detail"] == "could not submit: TypeError: submit() got an unexpected keyword argument 'partition'"
        for a in attempts
    )
    failed = await outbox_events(pool, "job.failed")
    assert [f["will_retry"] for f in failed] == [True, False] and "TypeError" in failed[0]["reason"]
    assert (await outbox_events(pool, "workflow.finished"))[0] == {
        "run_id": run_id, "workflow": "adhoc", "succeeded": False, "jobs": 1, "failed_jobs": 1,
    }


async def test_a_crashing_status_call_does_not_stop_the_dispatcher(settings, scheduler_pool, tmp_path: Path) -> None:
    pool, options, fake = scheduler_pool, _options(tmp_path), FakeBackend()
    await _one_job_run(pool, tmp_path, options)
    dispatcher, stop = _dispatcher(pool, settings, options, fake), asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 1 FROM attempts WHERE external_id IS NOT NULL"))
        fake.status_error = ValueError("cannot parse squeue line")
        calls = fake.status_calls
        await wait_for(lambda: fake.status_calls >= calls + 3 or task.done(), timeout_s=20)
        assert not task.done(), "the dispatcher died"
        fake.status_error = None
        fake.finished.add("fake-1")
        await wait_for(lambda: pool.fetchval("SELECT finished_at IS NOT NULL FROM runs"), timeout_s=20)
    finally:
        stop.set()
        await task
    assert len(fake.submitted) == 1


async def test_a_stop_lets_a_submission_under_way_finish(settings, scheduler_pool, tmp_path: Path) -> None:
    pool, options, fake = scheduler_pool, _options(tmp_path), FakeBackend()
    await _one_job_run(pool, tmp_path, options)
    dispatcher, stop = _dispatcher(pool, settings, options, fake), asyncio.Event()
    fake.hold_until = stop  # the submission is still talking to the batch system when SIGTERM arrives
    task = asyncio.create_task(dispatcher.run(stop))
    await wait_for(lambda: pool.fetchval("SELECT count(*) = 1 FROM attempts WHERE state = 'submitting'"))
    stop.set()
    await asyncio.wait_for(task, 10)
    attempts = await _attempts(pool)
    assert [(a["state"], a["external_id"]) for a in attempts] == [("submitted", "fake-1")]
    assert len(fake.submitted) == 1


def test_bad_backend_options_stop_the_start_up_with_the_option_named(tmp_path: Path) -> None:
    typo = SchedulerOptions(workdir_root=tmp_path, backend_options={"local": {"total_cpu": 4}})
    with pytest.raises(ConfigurationError, match=r"backend_options\.local.*total_cpu"):
        BackendPool(typo)
    unknown = SchedulerOptions(workdir_root=tmp_path, backend_options={"slurmm": {}})
    with pytest.raises(ConfigurationError, match="unknown backend.*slurmm"):
        BackendPool(unknown)
    BackendPool(SchedulerOptions(workdir_root=tmp_path, backend_options={"local": {"total_cpus": 4, **AS_ROOT}}))
