"""The scheduler's calls: registered workflows, runs and their jobs, retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from shared.api.scheduler import (
    RunDetail,
    RunList,
    RunRetried,
    RunStarted,
    RunSummary,
    Trigger,
    Workflow,
    WorkflowList,
    WorkflowRegistered,
)
from shared.client.transport import Transport
from shared.errors import ObsflowError


class RunNotFinished(ObsflowError):
    """A run did not finish within the time a caller waited for it."""


class SchedulerCalls:
    """The scheduler service's calls."""

    _transport: Transport

    async def workflows(self) -> list[Workflow]:
        """The registered workflows, by name."""
        return (await self._transport.call("scheduler", "GET", "/workflows", WorkflowList)).workflows

    async def register_workflow(self, name: str, config_text: str, *, trigger: Trigger,
                                match: Mapping[str, Any] | None = None,
                                backend: str | None = None) -> WorkflowRegistered:
        """Register (or replace) a workflow (admin): a hera_opm TOML text and what starts it (`match`: which minted
        files, for file.minted workflows; docs/scheduler.md)."""
        body: dict[str, Any] = {"name": name, "config_text": config_text, "trigger": trigger}
        if match is not None:
            body["match"] = dict(match)
        if backend is not None:
            body["backend"] = backend
        return await self._transport.call("scheduler", "POST", "/workflows", WorkflowRegistered, json=body)

    async def start_run(self, files: Sequence[str], *, workflow: str | None = None, config_text: str | None = None,
                        backend: str | None = None) -> RunStarted:
        """Run a registered `workflow` (or an ad-hoc `config_text`, admin unless the site allows it) over `files`
        (names or paths the scheduler can read) now."""
        if (workflow is None) == (config_text is None):
            raise ValueError("name a registered workflow or give a config_text, not both")
        body: dict[str, Any] = {"files": list(files)}
        body.update({"workflow": workflow} if workflow is not None else {"config_text": config_text})
        if backend is not None:
            body["backend"] = backend
        return await self._transport.call("scheduler", "POST", "/runs", RunStarted, json=body)

    async def runs(self, limit: int = 100) -> list[RunSummary]:
        """The newest runs (1-1000) with their state and job counts."""
        return (await self._transport.call("scheduler", "GET", "/runs", RunList, params={"limit": str(limit)})).runs

    async def run(self, run_id: str) -> RunDetail:
        """One run: its jobs with their states, attempts and last errors, and its provenance."""
        return await self._transport.call("scheduler", "GET", f"/runs/{quote(run_id, safe='')}", RunDetail)

    async def retry_run(self, run_id: str, *, failed_only: bool = True) -> RunRetried:
        """Run a finished run's failed jobs (and what they blocked) again; every ended job with failed_only False."""
        return await self._transport.call("scheduler", "POST", f"/runs/{quote(run_id, safe='')}/retry", RunRetried,
                                          json={"failed_only": failed_only})

    async def wait_for_run(self, run_id: str, *, timeout_s: float = 3600.0, poll_s: float = 2.0) -> RunDetail:
        """The run once it has finished (succeeded or failed); RunNotFinished after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = await self.run(run_id)
            if run.finished:
                return run
            if time.monotonic() >= deadline:
                raise RunNotFinished(f"run {run_id} is still {run.state} after {timeout_s:g} s; "
                                     f"see `obsflow workflow status {run_id}`")
            await asyncio.sleep(poll_s)  # polling the API: the scheduler has no push for run states but events
