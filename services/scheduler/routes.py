"""The scheduler's HTTP API (JSON under /api/v1): register workflows, start, list, inspect and retry runs."""

from __future__ import annotations

from typing import Any, get_args

import asyncpg
from aiohttp import web

from services.scheduler.backends import BACKEND_NAMES
from services.scheduler.runs import repository
from services.scheduler.runs.confinement import PolicyRefusal
from services.scheduler.runs.dispatcher import Dispatcher
from services.scheduler.runs.domain import reset_round
from services.scheduler.runs.matching import check_match
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.planning import check_workflow, plan_run
from services.scheduler.runs.views import run_detail, run_summaries
from shared.api.scheduler import (
    RunList,
    RunRetried,
    RunStarted,
    Trigger,
    Workflow,
    WorkflowList,
    WorkflowRegistered,
)
from shared.errors import PermanentError
from shared.http.answers import model_response
from shared.http.auth import Role, principal_of, requires
from shared.http.body import json_object
from shared.http.errors import json_error
from shared.service import ServiceContext

TRIGGERS: tuple[str, ...] = get_args(Trigger)


class BadRequest(PermanentError):
    """A request body the API cannot use; the message says which field and how to fix it."""


def _text(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f'"{key}" must be a non-empty string')
    return value


def scheduler_routes(ctx: ServiceContext, options: SchedulerOptions, dispatcher: Dispatcher) -> list[web.RouteDef]:
    """The route table, bound to the service's pool, options and dispatcher."""
    api = SchedulerApi(ctx.pool, options, dispatcher)
    return [
        web.post("/api/v1/workflows", requires(Role.ADMIN)(api.register_workflow)),
        web.get("/api/v1/workflows", requires(Role.READ_ONLY)(api.list_workflows)),
        web.post("/api/v1/runs", requires(Role.READ_APPEND)(api.start_run)),
        web.get("/api/v1/runs", requires(Role.READ_ONLY)(api.list_runs)),
        web.get("/api/v1/runs/{run_id}", requires(Role.READ_ONLY)(api.show_run)),
        web.post("/api/v1/runs/{run_id}/retry", requires(Role.READ_APPEND)(api.retry_run)),
    ]


class SchedulerApi:
    """The handlers of the scheduler's API."""

    def __init__(self, pool: asyncpg.Pool, options: SchedulerOptions, dispatcher: Dispatcher) -> None:
        self.pool = pool
        self.options = options
        self.dispatcher = dispatcher

    def _backend(self, body: dict[str, Any]) -> str:
        backend = _text(body, "backend", required=False) or self.options.backend
        if backend not in BACKEND_NAMES:
            raise BadRequest(f'"backend" must be one of {", ".join(BACKEND_NAMES)}; got {backend!r}')
        return backend

    def _adhoc_refusal(self, request: web.Request) -> web.Response | None:
        """403 for a non-admin sending its own config_text, unless allow_adhoc_configs is on."""
        principal = principal_of(request)
        if principal is None or principal.role >= Role.ADMIN or self.options.allow_adhoc_configs:
            return None
        return json_error(
            403, "adhoc_config_forbidden",
            f"{principal.account} has role {principal.role.label}, which may start runs of a registered workflow "
            '(send "workflow": its name; see GET /api/v1/workflows) but not of a config_text it sends. Ask an '
            "administrator to register the workflow, or to set [services.scheduler] allow_adhoc_configs = true",
        )

    async def register_workflow(self, request: web.Request) -> web.Response:
        """POST /workflows {name, config_text, trigger, match?, backend?}."""
        body = await json_object(request)
        name, config_text, trigger = _text(body, "name") or "", _text(body, "config_text") or "", _text(body, "trigger")
        if trigger not in TRIGGERS:
            raise BadRequest(f'"trigger" must be one of {", ".join(TRIGGERS)}; got {trigger!r}')
        backend = self._backend(body)
        match = body.get("match")
        if match is not None:
            if trigger != "file.minted":
                raise BadRequest('"match" applies to file.minted workflows only')
            check_match(match)
        try:  # refuses a config that cannot work, or names programs outside the script roots, now, not at night
            config = check_workflow(config_text, self.options, backend)
        except PolicyRefusal as e:
            return json_error(400, e.code, str(e))
        async with self.pool.acquire() as conn:
            await repository.register_workflow(conn, name, config.source_text, config.sha256, trigger, match, backend)
        registered = {"name": name, "trigger": trigger, "backend": backend, "config_sha256": config.sha256}
        return model_response(WorkflowRegistered.model_validate(registered), status=201)

    async def list_workflows(self, _request: web.Request) -> web.Response:
        """GET /workflows."""
        rows = await repository.list_workflows(self.pool)
        return model_response(WorkflowList(workflows=[Workflow(**row) for row in rows]))

    async def start_run(self, request: web.Request) -> web.Response:
        """POST /runs {workflow? | config_text, files, backend?}."""
        body = await json_object(request)
        name = _text(body, "workflow", required=False)
        if name is None and (refusal := self._adhoc_refusal(request)) is not None:
            return refusal
        files = body.get("files")
        if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
            raise BadRequest('"files" must be a non-empty list of file names or paths')
        if name is not None:
            found = [w for w in await repository.list_workflows(self.pool) if w["name"] == name]
            if not found:
                return json_error(404, "not_found", f"no workflow called {name!r}; see GET /api/v1/workflows")
            config_text, backend = found[0]["config_text"], found[0]["backend"]
        else:
            config_text, backend = _text(body, "config_text") or "", self._backend(body)
        try:
            run = plan_run(config_text, files, self.options, workflow_name=name, backend=backend)
        except PolicyRefusal as e:
            return json_error(400, e.code, str(e))
        async with self.pool.acquire() as conn, conn.transaction():
            await repository.insert_run(conn, run, None)
        self.dispatcher.wakeup.set()
        return model_response(RunStarted(run_id=run.run_id, jobs=len(run.jobs), workdir=run.workdir), status=201)

    async def list_runs(self, request: web.Request) -> web.Response:
        """GET /runs?limit=N (newest first)."""
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError as e:
            raise BadRequest("limit must be a whole number") from e
        return model_response(RunList(runs=await run_summaries(self.pool, limit)))

    async def show_run(self, request: web.Request) -> web.Response:
        """GET /runs/{id}: jobs with states and last errors, and provenance."""
        detail = await run_detail(self.pool, request.match_info["run_id"])
        if detail is None:
            return json_error(404, "not_found", f"no run {request.match_info['run_id']!r}; see GET /api/v1/runs")
        return model_response(detail)

    async def retry_run(self, request: web.Request) -> web.Response:
        """POST /runs/{id}/retry {failed_only}: start a new round for failed (or all ended) jobs."""
        run_id = request.match_info["run_id"]
        body = await json_object(request, optional=True)
        failed_only = body.get("failed_only", True)
        if not isinstance(failed_only, bool):
            raise BadRequest('"failed_only" must be true or false')
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM runs WHERE run_id = $1 FOR UPDATE", run_id) is None:
                return json_error(404, "not_found", f"no run {run_id!r}; see GET /api/v1/runs")
            rounds = reset_round(await repository.run_facts(conn, run_id), failed_only)
            await repository.reopen_run(conn, run_id, rounds)
        self.dispatcher.wakeup.set()
        return model_response(RunRetried(run_id=run_id, restarted_jobs=sorted(rounds)))
