"""The dispatch loop: polls in-flight attempts, records how they ended, finishes runs, submits ready jobs.

One dispatcher leads per schema (a session advisory lock), so two replicas never submit the same job.
On start it marks half-submitted attempts LOST and asks every backend about every in-flight id BEFORE it
submits anything new (re-attachment: the local backend counts those jobs against its budget). On stop it
lets submissions under way finish (up to the shutdown grace) before cancelling them: a submission cut off
after the batch system accepted the job is the one way a job runs twice.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from services.scheduler.backends import BackendError, JobState, JobStatus
from services.scheduler.runs import repository
from services.scheduler.runs.domain import JobFacts, job_statuses, run_outcome
from services.scheduler.runs.domain import JobStatus as RunJobStatus
from services.scheduler.runs.events import job_done, job_failed
from services.scheduler.runs.finishing import RunFinisher
from services.scheduler.runs.job_tokens import JobTokens
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.outputs import read_declared_outputs
from services.scheduler.runs.repository import InFlight
from services.scheduler.runs.submission import BackendPool, MakeEvent, record_submission_error, submit_attempt
from shared.bus.outbox import append_events
from shared.errors import ObsflowError
from shared.events import Payload
from shared.failures import describe, is_transient, translate_storage_errors
from shared.leadership import lead_periodically
from shared.locks import Leader, lock_key

log = structlog.get_logger()


def _passing(exc: BaseException) -> bool:
    """A failure a later pass can get past: an outage (see shared.failures) or the job file system failing."""
    return is_transient(exc) or isinstance(exc, OSError)


class Dispatcher:
    """Drives every open run forward; `run(stop)` is the scheduler's background task."""

    def __init__(
        self, pool: asyncpg.Pool, schema: str, options: SchedulerOptions, make_event: MakeEvent, *,
        shutdown_grace_s: float = 20.0, backends: BackendPool | None = None, tokens: JobTokens | None = None,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.options = options
        self.make_event = make_event
        self.shutdown_grace_s = shutdown_grace_s
        self.backends = backends if backends is not None else BackendPool(options)  # checks backend_options
        self.finisher = RunFinisher(pool, options, make_event)
        self.tokens = tokens  # each job's OBSFLOW_TOKEN (None: jobs inherit the scheduler's environment's)
        self._submitting: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._polled = False  # every backend with in-flight ids has been asked about them at least once
        self._unattached: set[str] = set()  # backends whose last status() failed: submit nothing to them
        self.wakeup = asyncio.Event()
        self.submissions = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Lead dispatching for this schema until `stop` is set; then hand in-flight submissions back.

        A database restart ends the session holding the lock, and the leadership with it: dispatching stops at once
        (another replica may lead now) and takes the lock again once the database is back. Outages are waited out
        the same way; anything else ends the part.
        """
        leader = Leader(self.pool, lock_key("dispatch", self.schema), f"dispatcher of {self.schema}")
        try:
            await lead_periodically(leader, stop, self._tick, interval_s=self.options.poll_interval_s,
                                    wakeup=self.wakeup, on_lead=self._abandon_submitting,
                                    on_leave=self._stop_submissions)
        finally:
            await self.backends.close()

    async def _abandon_submitting(self) -> None:
        lost = await repository.abandon_submitting(self.pool)
        if lost:
            log.warning("attempts_lost_while_submitting", attempts=len(lost))

    async def _tick(self) -> None:
        with translate_storage_errors("the job file system"):  # a hiccup there is passed, like an outage
            await self.tick()

    async def tick(self) -> None:
        """One pass: poll in-flight attempts, finish ended runs, record provenance, submit ready jobs."""
        await self.poll_in_flight()
        runs = await repository.open_runs(self.pool)
        await self.finisher.capture_provenance()
        backends = {r["run_id"]: r["backend"] for r in await self.pool.fetch(
            "SELECT run_id, backend FROM runs WHERE finished_at IS NULL"
        )}
        for run_id, jobs in runs.items():
            await self._advance(run_id, jobs, backends.get(run_id, self.options.backend))

    async def _advance(self, run_id: str, jobs: dict[str, JobFacts], backend: str) -> None:
        statuses = job_statuses(jobs)
        outcome = run_outcome(statuses)
        if outcome.finished:
            await self.finisher.finish(run_id, outcome)
            return
        if not self._polled or backend in self._unattached:
            return  # its in-flight jobs have not been re-attached yet
        for key, status in statuses.items():
            if status != RunJobStatus.READY or (run_id, key) in self._submitting:
                continue
            task = asyncio.create_task(self._submit(run_id, key, jobs[key].next_attempt))
            self._submitting[(run_id, key)] = task

    async def _submit(self, run_id: str, key: str, attempt: int) -> None:
        try:
            await submit_attempt(
                self.pool, self.backends, self.make_event, self.options.path_policy, run_id, key, attempt, self.tokens
            )
            self.submissions += 1
        except Exception as e:  # classified: a passing failure defers; a bug or a bad option ends the attempt
            if _passing(e):
                log.warning("job_submission_deferred", run_id=run_id, job=key, error=describe(e))
            else:
                await self._record_crash(run_id, key, attempt, e)
        finally:
            self._submitting.pop((run_id, key), None)
            self.wakeup.set()

    async def _record_crash(self, run_id: str, key: str, attempt: int, error: Exception) -> None:
        try:
            await record_submission_error(self.pool, self.make_event, run_id, key, attempt, error)
        except Exception as e:  # classified: a passing failure is logged (the attempt is marked lost on restart)
            if not _passing(e):
                raise
            log.warning("job_submission_error_not_recorded", run_id=run_id, job=key, error=describe(e))

    async def poll_in_flight(self) -> None:
        """Ask each backend, in one status() call, about its in-flight attempts; record the ones that ended."""
        attempts = await repository.in_flight(self.pool)
        by_backend: dict[str, list[InFlight]] = {}
        for a in attempts:
            by_backend.setdefault(a.backend, []).append(a)
        for name, batch in by_backend.items():
            try:
                statuses = await self.backends.get(name).status([a.external_id for a in batch])
            except (BackendError, ObsflowError) as e:
                # Transient (controller down) or not (an id it cannot read): submit nothing there until it answers.
                log.error("backend_status_failed", backend=name, error=str(e), error_class=e.__class__.__name__)
                self._unattached.add(name)
                continue
            except Exception as e:  # a bug in one backend must not stop the others (or the service)
                log.error("backend_status_crashed", backend=name, error=str(e), error_class=e.__class__.__name__,
                          exc_info=e)
                self._unattached.add(name)
                continue
            self._unattached.discard(name)
            await self._record(batch, statuses)
        self._polled = True

    async def _record(self, batch: list[InFlight], statuses: dict[str, JobStatus]) -> None:
        running = []
        for a in batch:
            status = statuses.get(a.external_id)
            if status is None:
                continue
            if status.state.is_final:
                await self._record_final(a, status)
            elif status.state == JobState.RUNNING:
                running.append((a.run_id, a.job_key, a.attempt, status.host))
        if running:
            await repository.mark_running(self.pool, running)

    async def _record_final(self, a: InFlight, status: JobStatus) -> None:
        state = status.state.value
        outputs: list[str] = []
        if status.state == JobState.SUCCEEDED:
            outputs = await asyncio.to_thread(read_declared_outputs, a.log_path)
        async with self.pool.acquire() as conn, conn.transaction():
            ended = await repository.end_attempt(
                conn, a.run_id, a.job_key, a.attempt, state, status.exit_code, status.host, status.detail
            )
            if ended is None:
                return
            job = await repository.job_row(conn, a.run_id, a.job_key)
            payload: Payload
            if status.state == JobState.SUCCEEDED:
                payload = job_done(job, ended["submitted_at"], ended["ended_at"], a.log_path, outputs)
            else:
                facts = (await repository.run_facts(conn, a.run_id))[a.job_key]
                reason = status.detail or state
                payload = job_failed(job, facts, a.attempt, state, reason, status.exit_code, a.log_path)
            await append_events(conn, [self.make_event(payload)])
        log.info("job_ended", run_id=a.run_id, job=a.job_key, attempt=a.attempt, state=state, host=status.host)

    async def _stop_submissions(self) -> None:
        """Let submissions under way finish within the shutdown grace; cancel (and mark lost) the rest."""
        tasks = list(self._submitting.values())
        try:
            if tasks:
                log.info("dispatcher_finishing_submissions", submissions=len(tasks), grace_s=self.shutdown_grace_s)
                await asyncio.wait(tasks, timeout=self.shutdown_grace_s)
        finally:
            late = [task for task in tasks if not task.done()]
            for task in late:
                task.cancel()
            if late:
                log.warning("submissions_cancelled_at_stop", submissions=len(late))
            await asyncio.gather(*tasks, return_exceptions=True)

