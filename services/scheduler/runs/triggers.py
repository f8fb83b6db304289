"""Stream handlers that start runs: `session.closed` starts every session workflow over the night's files,
`file.minted` starts the real-time workflows whose `match` the new file satisfies.

A run is created in the handler's transaction (with the consumer's record of handled events); the unique
(workflow, trigger event) pair makes a second delivery of the same event start nothing new. An event older
than a workflow's registration starts nothing for it: a replay of the log (or a consumer catching up days
behind) must not run a new workflow over a month of old nights.

Only this site's own events start runs: a peer's session.closed and file.minted cross to us (its catalog and
scheduler act on them at home), and its nights and files are not ours to process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from services.scheduler.runs import repository
from services.scheduler.runs.matching import matches
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.planning import plan_run
from services.scheduler.workflow import WorkflowError
from shared.bus.stream_consumer import StreamHandler
from shared.events import Event

log = structlog.get_logger()


class RunTriggers:
    """The scheduler's stream handlers, bound to its options."""

    def __init__(self, options: SchedulerOptions, *, site: str) -> None:
        self.options = options
        self.site = site

    def handlers(self) -> dict[str, StreamHandler]:
        """Handlers by event type, for `ctx.stream_consumer`."""
        return {"session.closed": self.on_session_closed, "file.minted": self.on_file_minted}

    async def on_session_closed(self, conn: asyncpg.Connection, event: Event) -> None:
        """One run of each session workflow over the session's files (in time order)."""
        files: list[str] = list(event.payload.file_names)  # type: ignore[attr-defined]
        if not files or not self._own(event):
            return
        for workflow in await repository.list_workflows(conn, "session.closed"):
            if _registered_before(workflow, event):
                await self._start(conn, workflow, files, event)

    async def on_file_minted(self, conn: asyncpg.Connection, event: Event) -> None:
        """One run of each real-time workflow whose match the new file satisfies."""
        if not self._own(event):
            return
        payload = event.payload.model_dump(mode="json")
        for workflow in await repository.list_workflows(conn, "file.minted"):
            if _registered_before(workflow, event) and matches(workflow["match"], payload):
                await self._start(conn, workflow, [payload["name"]], event)

    def _own(self, event: Event) -> bool:
        """Whether the event is this site's (another site's starts nothing here)."""
        if event.site == self.site:
            return True
        log.debug("run_not_started_event_of_another_site", trigger=event.type, site=event.site,
                  event_id=str(event.event_id))
        return False

    async def _start(
        self, conn: asyncpg.Connection, workflow: dict[str, Any], files: Sequence[str], event: Event
    ) -> None:
        try:
            run = plan_run(
                workflow["config_text"], list(files), self.options,
                workflow_name=workflow["name"], backend=workflow["backend"],
            )
        except WorkflowError as e:
            # The workflow cannot run on these files; other workflows still start, and the event is handled.
            log.error("run_not_started", workflow=workflow["name"], trigger=event.type, files=len(files), error=str(e))
            return
        if await repository.insert_run(conn, run, event.event_id):
            log.info(
                "run_created", run_id=run.run_id, workflow=workflow["name"], trigger=event.type, jobs=len(run.jobs)
            )
        else:
            log.info("run_already_started", workflow=workflow["name"], trigger_event_id=str(event.event_id))


def _registered_before(workflow: dict[str, Any], event: Event) -> bool:
    """Whether the workflow was registered when the event happened (else the event is not its business)."""
    if workflow["registered_at"] <= event.occurred_at:
        return True
    log.info(
        "run_not_started_event_predates_workflow", workflow=workflow["name"], trigger=event.type,
        event_id=str(event.event_id), occurred_at=event.occurred_at.isoformat(),
        registered_at=workflow["registered_at"].isoformat(),
    )
    return False
