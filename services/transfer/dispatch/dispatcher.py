"""The dispatch loop: one leader per schema sends due transfers to their next hop in batches, lane by lane.

A batch is recorded (its id, its files, an attempt each) before its manager is called, and ended with every file's
outcome in one transaction. A batch still open when a leader starts (the last one died, or was stopped, mid-batch)
is sent again first, under the same id: the destination keeps one instance per file whatever it receives twice, and a
manager that submitted work elsewhere resumes it from the batch's journal. A file that fails is tried again after a
capped exponential backoff, at most `max_attempts` times; then it stays visible as stuck with its last reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from pydantic import ValidationError

from services.transfer import repository
from services.transfer.dispatch.lanes import Lane, TransferFigures
from services.transfer.forwarding import Forwarder
from services.transfer.managers.base import Delivered, Failed, FileToSend, Outcome, TransferManager
from services.transfer.optimizer import ConcurrencyOptimizer
from services.transfer.options import TransferOptions
from services.transfer.repository import DueTransfer, OpenBatch, Result
from services.transfer.routing import Arrived, Forward, Send, next_hop
from shared.api.ingest import ReplicaFile
from shared.bus.outbox import append_events
from shared.events import Event, Payload
from shared.events.types import TransferFailed
from shared.failures import describe, is_transient, suppress_transient
from shared.leadership import lead_periodically
from shared.locks import Leader, lock_key
from shared.settings import Settings

log = structlog.get_logger()


class DbJournal:
    """A batch's notes in the `batches` row (the BatchJournal a manager resumes from)."""

    def __init__(self, pool: asyncpg.Pool, batch_id: str) -> None:
        self._pool = pool
        self._batch_id = batch_id

    async def recall(self) -> dict[str, Any]:
        async with self._pool.acquire() as conn:
            return await repository.journal(conn, self._batch_id)

    async def note(self, values: dict[str, Any]) -> None:
        async with self._pool.acquire() as conn:
            await repository.note_journal(conn, self._batch_id, values)


class TransferDispatcher:
    """Sends what the orders want; `run(stop)` is the transfer service's background task."""

    def __init__(
        self, pool: asyncpg.Pool, schema: str, settings: Settings, options: TransferOptions,
        managers: Mapping[str, TransferManager], forwarder: Forwarder, figures: TransferFigures,
        make_event: Callable[[Payload], Event],
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.site = settings.site
        self.peers = {p.name: p for p in settings.peers}
        self.store_roots = {s.name: s.root for s in settings.stores}
        self.options = options
        self.managers = managers
        self.forwarder = forwarder
        self.figures = figures
        self.make_event = make_event
        self.lanes = {name: Lane(peer, ConcurrencyOptimizer(level=options.http_concurrency_initial,
                                                            maximum=options.http_concurrency_max),
                                 link_wait_base_s=min(1.0, options.backoff_base_s),
                                 link_wait_cap_s=min(60.0, options.backoff_cap_s))
                      for name, peer in self.peers.items()}
        self._forwarding: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._running: dict[str, asyncio.Task[None]] = {}  # batch id -> the task sending it
        self.wakeup = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Lead dispatching for this schema until `stop`; outages and a lost lock are waited out, nothing else."""
        leader = Leader(self.pool, lock_key("transfer-dispatch", self.schema), f"transfer dispatcher of {self.schema}")
        try:
            await lead_periodically(leader, stop, self.tick, interval_s=self.options.dispatch_interval_s,
                                    wakeup=self.wakeup, on_leave=self._stop_batches)
        finally:
            for manager in self.managers.values():
                await manager.close()

    async def tick(self) -> None:
        """One pass: open batches no task sends (the last leader died in them, or their task met an outage) sent
        again under their ids; then every due transfer to its next hop, a batch started on every lane with room."""
        async with self.pool.acquire() as conn:
            unfinished = [b for b in await repository.open_batches(conn) if b.batch_id not in self._running]
            due = await repository.due_transfers(conn, self.site, max_attempts=self.options.max_attempts,
                                                 limit=self.options.dispatch_window)
        if unfinished:
            log.warning("transfer_batches_resumed", batches=len(unfinished))
        for open_batch in unfinished:
            lane = self.lanes.get(open_batch.peer)
            if lane is None:
                await self._end_orphan(open_batch)
            else:
                self._launch(lane, open_batch)
        by_lane: dict[str, list[DueTransfer]] = {}
        for transfer in due:
            hop = next_hop(self.peers, transfer.destination, {*transfer.holders, self.site})
            if isinstance(hop, Arrived):
                continue
            if isinstance(hop, Forward):
                self._forward(transfer, hop.via)
            elif isinstance(hop, Send):
                by_lane.setdefault(hop.peer, []).append(transfer)
        for peer, transfers in by_lane.items():
            lane = self.lanes.get(peer)
            if lane is None:  # a destination that is no declared peer (any more)
                await self._refuse_unknown(peer, transfers)
                continue
            # A file two transfers want over this lane (to the via peer, and through it further) crosses it once:
            # its transfers ride in one batch, and none starts while a batch of the lane carries the file.
            waiting = [t for t in transfers if t.file_name not in lane.sending]
            if lane.waiting_for_link():
                waiting = waiting[:1]  # one batch of one file probes the link until it answers again
            while not lane.busy and waiting:
                batch, waiting = _take_files(waiting, self._batch_size(lane, waiting[0]))
                await self._start(lane, self._manager_name(lane, batch[0]), batch)

    def _manager_name(self, lane: Lane, transfer: DueTransfer) -> str:
        # An order's manager applies on a direct link; a hop goes the way the link to the via peer is configured.
        if transfer.manager and transfer.destination == lane.peer.name:
            return transfer.manager
        return lane.peer.manager

    def _batch_size(self, lane: Lane, transfer: DueTransfer) -> int:
        if self._manager_name(lane, transfer) == "globus":
            return self.options.send_batch_max  # the Globus manager cuts it into tasks of its batch_files
        return lane.optimizer.level

    async def _start(self, lane: Lane, manager: str, batch: Sequence[DueTransfer]) -> None:
        open_batch = OpenBatch(uuid.uuid4().hex, lane.peer.name, manager,
                               tuple((t.file_name, t.destination) for t in batch))
        async with self.pool.acquire() as conn, conn.transaction():
            await repository.start_batch(conn, open_batch.batch_id, lane.peer.name, manager, open_batch.items)
        self._launch(lane, open_batch)

    async def _end_orphan(self, batch: OpenBatch) -> None:
        """A batch to a peer no longer declared: each of its files failed (counted), with the reason."""
        reason = f"{batch.peer} is no longer a declared peer of {self.site}"
        results = [Result(name, destination, "failed", reason) for name, destination in batch.items]
        async with self.pool.acquire() as conn, conn.transaction():
            await repository.finish_batch(conn, batch.batch_id, results,
                                          retry_delays_s=[self.options.backoff_cap_s] * len(results))
        log.warning("transfer_batch_orphaned", batch_id=batch.batch_id, peer=batch.peer, reason=reason)

    def _launch(self, lane: Lane, batch: OpenBatch) -> None:
        files = {name for name, _ in batch.items}
        lane.sending |= files
        task = asyncio.create_task(self._send(lane, batch), name=f"transfer-batch-{batch.batch_id}")
        lane.batches.add(task)
        self._running[batch.batch_id] = task

        def ended(done: asyncio.Task[None]) -> None:
            lane.batches.discard(done)
            lane.sending -= files
            self._running.pop(batch.batch_id, None)
            if not done.cancelled() and (error := done.exception()) is not None:
                # Its batch stays open in the schema: the next pass sends it again under the same id.
                log.warning("transfer_batch_interrupted", batch_id=batch.batch_id, peer=batch.peer,
                            error=describe(error))

        task.add_done_callback(ended)

    async def _send(self, lane: Lane, batch: OpenBatch) -> None:
        started, moved = time.monotonic(), 0

        async def progress(nbytes: int) -> None:
            nonlocal moved
            moved += nbytes
            self.figures.bytes.labels(lane.peer.name).inc(nbytes)
            await lane.spend(nbytes)

        names = sorted({name for name, _ in batch.items})
        async with self.pool.acquire() as conn:
            sources = await repository.sources(conn, names, self.site)
        files, missing = self._files_to_send(names, sources)
        outcomes: dict[str, Outcome] = dict(missing)
        manager = self.managers.get(batch.manager)
        if manager is None:
            outcomes.update({f.name: Failed(f.name, f"no {batch.manager!r} transfer manager is configured here",
                                            permanent=True) for f in files})
        elif files:
            try:
                sent = await manager.send(lane.peer, batch.batch_id, files, DbJournal(self.pool, batch.batch_id),
                                          progress)
                outcomes.update({o.name: o for o in sent})
            except Exception as e:  # a failure of the whole batch (the peer unreachable): every file retries
                if not is_transient(e):
                    log.error("transfer_batch_failed", batch_id=batch.batch_id, peer=lane.peer.name, error=describe(e))
                outcomes.update({f.name: Failed(f.name, describe(e), unreachable=is_transient(e))
                                 for f in files if f.name not in outcomes})
        await self._finish(lane, batch, outcomes, moved, time.monotonic() - started)

    def _files_to_send(
        self, names: Sequence[str], sources: Mapping[str, repository.Source]
    ) -> tuple[list[FileToSend], dict[str, Outcome]]:
        files: list[FileToSend] = []
        missing: dict[str, Outcome] = {}
        for name in names:
            source = sources.get(name)
            root = self.store_roots.get(source.store) if source else None
            if source is None or root is None:
                missing[name] = Failed(name, f"{self.site} holds no verified copy of {name} on a configured store")
                continue
            try:
                record = ReplicaFile.model_validate(source.minted)
            except ValidationError as e:
                missing[name] = Failed(name, f"the minted record of {name} is not a replica claim: {e}", permanent=True)
                continue
            files.append(FileToSend(record, root, Path(source.path)))
        return files, missing

    async def _finish(
        self, lane: Lane, batch: OpenBatch, outcomes: Mapping[str, Outcome], moved: int, seconds: float
    ) -> None:
        link_down = bool(batch.items) and all(
            isinstance(o := outcomes.get(name), Failed) and o.unreachable for name, _ in batch.items)
        results = [_result(outcomes.get(name) or Failed(name, "the manager reported nothing for this file"),
                           destination, reached=destination == batch.peer, link_down=link_down)
                   for name, destination in batch.items]
        # A peer that cannot be reached at all holds its lane back (capped backoff): the files wait for the link,
        # their attempts uncounted, however long the outage. A file failing while others get through is its own
        # failure, counted.
        lane_wait = lane.unreachable() if link_down else lane.reachable()
        async with self.pool.acquire() as conn, conn.transaction():
            attempts = await repository.attempts_of(conn, batch.items)
            delays = [lane_wait if link_down else self.options.backoff_s(attempts.get((r.file_name, r.destination), 1))
                      for r in results]
            given_up = [self._given_up(r, attempts.get((r.file_name, r.destination), 0)) for r in results
                        if r.outcome == "failed" and not r.unreachable
                        and (r.permanent or attempts.get((r.file_name, r.destination), 0) >= self.options.max_attempts)]
            await repository.finish_batch(conn, batch.batch_id, results, retry_delays_s=delays)
            await append_events(conn, given_up)  # with the fact: no give-up without its event, nor the reverse
        for result in results:
            self.figures.files.labels(lane.peer.name, result.outcome).inc()
        failed = sum(1 for r in results if r.outcome == "failed")
        # An outage says nothing about how many streams the link carries: the level stays for when it is back.
        level = lane.optimizer.level if link_down else lane.optimizer.observe(moved, seconds, len(results), failed)
        self.figures.concurrency.labels(lane.peer.name).set(level)
        log.info("transfer_batch_ended", batch_id=batch.batch_id, peer=batch.peer, manager=batch.manager,
                 files=len(results), failed=failed, bytes=moved, seconds=round(seconds, 3), concurrency=level,
                 **({"first_failure": next(r.reason for r in results if r.outcome == "failed")} if failed else {}))
        self.wakeup.set()  # room on the lane: the next batch need not wait for the next tick

    def _given_up(self, result: Result, attempts: int) -> Event:
        return self.make_event(TransferFailed(file_name=result.file_name, destination=result.destination,
                                              attempts=attempts, reason=(result.reason or "")[:4096],
                                              permanent=result.permanent))

    def _forward(self, transfer: DueTransfer, via: str) -> None:
        key = (transfer.file_name, transfer.destination)
        if key in self._forwarding:
            return
        task = asyncio.create_task(self._ask_forward(transfer, via))
        self._forwarding[key] = task
        task.add_done_callback(lambda _t: self._forwarding.pop(key, None))

    async def _ask_forward(self, transfer: DueTransfer, via: str) -> None:
        """Ask `via` to send the file on; its answer, or the failure and when to ask again, recorded. An outage of
        this site's database while recording is passed: the transfer is still due, the next pass asks again."""
        try:
            await self.forwarder.forward(self.peers[via], transfer.file_name, transfer.destination)
        except Exception as e:  # recorded against the transfer, retried after its backoff
            reason = f"asking {via} to send it on to {transfer.destination}: {describe(e)}"
            log.warning("transfer_forward_failed", file=transfer.file_name, via=via,
                        destination=transfer.destination, error=describe(e))
            with suppress_transient():
                async with self.pool.acquire() as conn:
                    await repository.note_failure(conn, transfer.file_name, transfer.destination, reason,
                                                  self.options.backoff_s(transfer.attempts + 1))
            return
        with suppress_transient():
            async with self.pool.acquire() as conn:
                await repository.mark_forwarded(conn, transfer.file_name, transfer.destination)
            log.info("transfer_forwarded", file=transfer.file_name, via=via, destination=transfer.destination)

    async def _refuse_unknown(self, peer: str, transfers: Sequence[DueTransfer]) -> None:
        reason = f"{peer} is not a declared peer of {self.site}: add it to [[peers]]"
        async with self.pool.acquire() as conn:
            for t in transfers:
                await repository.note_failure(conn, t.file_name, t.destination, reason, self.options.backoff_cap_s)

    async def _stop_batches(self) -> None:
        """Cancel batches in flight: they stay open in the schema and are sent again by the next leader."""
        tasks = [task for lane in self.lanes.values() for task in lane.batches] + list(self._forwarding.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _take_files(transfers: Sequence[DueTransfer], files: int) -> tuple[list[DueTransfer], list[DueTransfer]]:
    """The transfers of the first `files` distinct files (all of each file's transfers), and the rest."""
    chosen: set[str] = set()
    taken: list[DueTransfer] = []
    rest: list[DueTransfer] = []
    for transfer in transfers:
        if transfer.file_name in chosen or len(chosen) < files:
            chosen.add(transfer.file_name)
            taken.append(transfer)
        else:
            rest.append(transfer)
    return taken, rest


def _result(outcome: Outcome, destination: str, *, reached: bool, link_down: bool) -> Result:
    """A file's outcome as the attempt of one of its transfers records it (`link_down`: the whole batch found the
    peer unreachable)."""
    if isinstance(outcome, Delivered):
        return Result(outcome.name, destination, "already" if outcome.already else "delivered",
                      reached_destination=reached)
    return Result(outcome.name, destination, "failed", outcome.reason, permanent=outcome.permanent,
                  unreachable=link_down)
