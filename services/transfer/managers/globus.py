"""The Globus transfer manager: a batch goes as Globus transfer tasks, and the peer's ingest adopts what landed.

Each task carries up to `batch_files` files (the SO Librarian's 128-1,024: Globus allows 3 active tasks per user and
~20 API requests a second, so files travel many to a task). Before a task is submitted its submission id is noted in
the batch's journal, after it its task id: handed the same batch again (a crash, a transient failure), the manager
polls a noted task and resubmits a noted submission id, which Globus deduplicates. It never submits twice.

Globus checks its copy (checksum sync, checksum verification); the bytes at the destination are not an instance yet:
`adopt` asks the peer's ingest to verify them against the minted checksum and record one (docs/transfer-globus.md).
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import globus_sdk
from globus_sdk.authorizers import GlobusAuthorizer
from globus_sdk.scopes import GCSCollectionScopes, Scope
from globus_sdk.transport import RetryConfig

from services.transfer.managers.base import BatchJournal, Failed, FileToSend, Outcome, Progress, TransferManager
from services.transfer.managers.globus_options import TABLE, GlobusOptions, GlobusPeer, read_secret
from shared.api.ingest import ReplicaFile
from shared.errors import ConfigurationError, PermanentError, TransientError
from shared.failures import describe
from shared.settings import PeerSettings

Adopt = Callable[[PeerSettings, ReplicaFile, str], Awaitable[Outcome]]
_T = TypeVar("_T")
_CHUNK_KEY = "globus.batch_files"  # the task size this batch was split with: a resumed batch splits the same way
_DONE = ("SUCCEEDED", "FAILED")
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9 _.,-]")


class GlobusUnavailable(TransientError):
    """Globus did not answer (a network error, a 5xx, rate limiting): the batch is handed back and resumed later."""


class GlobusRefused(ConfigurationError, PermanentError):
    """Globus refused this site's requests (authentication, consent, a collection or path): an operator must act."""


def _translate(what: str, e: globus_sdk.GlobusAPIError | globus_sdk.NetworkError) -> Exception:
    """A Globus SDK error as an obsflow error: waited out (TransientError) or an operator's to fix (GlobusRefused)."""
    if isinstance(e, globus_sdk.NetworkError):
        return GlobusUnavailable(f"Globus {what}: {describe(e)} ({describe(e.underlying_exception)}); the batch "
                                 "resumes later")
    said = f"{e.http_status} {e.code}: {e.message}"
    if e.http_status == 429 or e.http_status >= 500:
        return GlobusUnavailable(f"Globus {what}: {said}; the batch resumes later")
    if e.http_status in (401, 403):
        return GlobusRefused(
            f"Globus refused {what} ({said}): check {TABLE} client_id/client_secret_file or token_file, that the "
            "identity has consented to the Transfer scope (and data_access for mapped collections), and that both "
            "collections are active and grant it access")
    return GlobusRefused(f"Globus refused {what} ({said}): check the collection ids and paths in {TABLE}")


class GlobusManager(TransferManager):
    """Sends batches as Globus transfer tasks, then has the peer's ingest adopt each landed file."""

    name = "globus"

    def __init__(self, options: GlobusOptions, adopt: Adopt, *, environment: str | None = None) -> None:
        self.options = options
        self._adopt = adopt
        self._environment = environment
        # Secrets are read now (a missing file fails start-up); Globus is first asked on first use, off the loop.
        if options.client_id is not None and options.client_secret_file is not None:
            self._secret = read_secret(options.client_secret_file, "client_secret_file")
        elif options.token_file is not None:
            self._secret = read_secret(options.token_file, "token_file")
        else:  # GlobusOptions refuses this; a hand-built options object may not
            raise ConfigurationError(f"{TABLE}: give client_id and client_secret_file, or token_file")
        self._auth: globus_sdk.ConfidentialAppAuthClient | None = None
        self._client: globus_sdk.TransferClient | None = None
        self._connecting = threading.Lock()

    def _connected(self) -> globus_sdk.TransferClient:
        """The TransferClient, built on first use (a confidential app fetches its first token here: network I/O)."""
        with self._connecting:
            if self._client is None:
                retry = RetryConfig(max_retries=self.options.request_retries)
                authorizer: GlobusAuthorizer
                if self.options.client_id is not None:
                    self._auth = globus_sdk.ConfidentialAppAuthClient(
                        self.options.client_id, self._secret, environment=self._environment, retry_config=retry)
                    authorizer = globus_sdk.ClientCredentialsAuthorizer(self._auth, self._scope())
                else:
                    authorizer = globus_sdk.AccessTokenAuthorizer(self._secret)
                self._client = globus_sdk.TransferClient(
                    authorizer=authorizer, environment=self._environment, retry_config=retry)
            return self._client

    def _scope(self) -> Scope:
        scope = globus_sdk.TransferClient.scopes.all
        if not self.options.data_access:
            return scope
        ids = [str(self.options.collection_id), *(str(p.collection_id) for p in self.options.peers.values())]
        return scope.with_dependencies([GCSCollectionScopes(i).data_access.with_optional(True)
                                        for i in ids])

    async def close(self) -> None:
        with self._connecting:
            if self._client is not None:
                self._client.close()
            if self._auth is not None:
                self._auth.close()
            self._client = self._auth = None

    async def _call(self, what: str, call: Callable[[globus_sdk.TransferClient], _T]) -> _T:
        # The SDK is synchronous (requests): off the event loop, its errors translated here and nowhere else.
        try:
            return await asyncio.to_thread(lambda: call(self._connected()))
        except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as e:
            raise _translate(what, e) from e

    async def send(
        self, peer: PeerSettings, batch_id: str, files: Sequence[FileToSend], journal: BatchJournal,
        progress: Progress,
    ) -> list[Outcome]:
        """Send `files` in tasks of at most batch_files (a resumed batch polls or resubmits what its journal holds);
        each landed file is adopted by the peer's ingest, every other one is Failed with Globus's reason."""
        if not files:
            return []
        route = self._route(peer)
        by_name = {f.name: f for f in files}
        sources = {name: self._source_path(f) for name, f in by_name.items()}
        notes = await journal.recall()
        size = int(notes.get(_CHUNK_KEY, self.options.batch_files))
        if _CHUNK_KEY not in notes:
            await journal.note({_CHUNK_KEY: size})
        names = sorted(by_name)  # the dispatcher may hand the files in another order when it resumes a batch
        parts = [names[i:i + size] for i in range(0, len(names), size)]
        outcomes: dict[str, Outcome] = {}
        running: list[tuple[list[str], _Task]] = []
        for index, part in enumerate(parts):
            key = f"globus.part.{index}"
            noted = notes.get(key) or {}
            if noted.get("submission_id") and not noted.get("task_id") and time.time() >= noted["deadline"]:
                # Never submitted (or never heard back) before its deadline: a new batch sends these files afresh.
                reason = f"not submitted to Globus before its deadline {_iso(noted['deadline'])} ({TABLE} deadline_s)"
                outcomes.update({name: Failed(name, reason) for name in part})
                continue
            label = _LABEL_CHARS.sub("-", f"obsflow {batch_id} {index + 1} of {len(parts)}")[:128]
            items = [(sources[n], posixpath.join(route.landing_path, n)) for n in part]
            running.append((part, await self._task_of(key, notes, journal, route, label, items)))
        documents = await self._wait([task for _, task in running], progress)
        for (part, task), document in zip(running, documents, strict=True):
            outcomes.update(await self._settle(peer, route, [by_name[n] for n in part], task.task_id, document))
        return [outcomes[f.name] for f in files]

    def _route(self, peer: PeerSettings) -> GlobusPeer:
        route = self.options.peers.get(peer.name)
        if route is None:
            raise ConfigurationError(
                f"peer {peer.name!r} uses the globus manager but {TABLE} has no peers.{peer.name} table: give its "
                "collection_id, landing_path and ingest_path")
        return route

    def _source_path(self, file: FileToSend) -> str:
        root = str(file.store_root)
        mapped = self.options.path_map.get(root) or self.options.path_map.get(str(file.store_root.resolve()))
        if mapped is None:
            raise ConfigurationError(
                f"store root {root!r} (of {file.name!r}) has no entry in {TABLE} path_map: map it to the same "
                "directory as a path on this site's collection")
        relative = file.path.relative_to(file.store_root) if file.path.is_absolute() else file.path
        return posixpath.join(mapped, relative.as_posix())

    async def _task_of(self, key: str, notes: dict[str, Any], journal: BatchJournal, route: GlobusPeer,
                       label: str, items: list[tuple[str, str]]) -> _Task:
        """The task of one part: the noted one, or submitted now under a submission id noted before submitting."""
        part = dict(notes.get(key) or {})
        if not part.get("submission_id"):
            answer = await self._call("a submission id", lambda c: c.get_submission_id())
            part = {"submission_id": str(answer["value"]), "deadline": time.time() + self.options.deadline_s}
            await journal.note({key: part})
        if not part.get("task_id"):
            data = globus_sdk.TransferData(
                str(self.options.collection_id), str(route.collection_id), label=label,
                submission_id=part["submission_id"], deadline=_iso(part["deadline"]),
                sync_level=self.options.sync_level, verify_checksum=self.options.verify_checksum,
                preserve_timestamp=self.options.preserve_timestamp,
                skip_source_errors=self.options.skip_source_errors, fail_on_quota_errors=True)
            for source, destination in items:
                data.add_item(source, destination)
            part["task_id"] = await self._submit(data, label)
            await journal.note({key: part})
        return _Task(str(part["task_id"]), float(part["deadline"]))

    async def _submit(self, data: globus_sdk.TransferData, label: str) -> str:
        try:
            answer = await self._call("a transfer submission", lambda c: c.submit_transfer(data))
        except GlobusRefused as e:
            cause = e.__cause__
            if not (isinstance(cause, globus_sdk.GlobusAPIError) and cause.http_status == 409):
                raise
            # A conflict on a submission id already used: the task exists. Globus answers a plain resubmission with
            # code "Duplicate" and the original task id; should it answer 409, find the task by its label instead.
            found = await self._call("the task list", lambda c: c.task_list(
                filter={"label": label, "type": "TRANSFER"}, limit=2))
            ids = [str(task["task_id"]) for task in found]
            if len(ids) != 1:
                raise GlobusUnavailable(
                    f"Globus answered 409 to a resubmission of {label!r} and lists {len(ids)} tasks with that label; "
                    "the batch resumes later with the same submission id") from e
            return ids[0]
        return str(answer["task_id"])

    async def _wait(self, tasks: list[_Task], progress: Progress) -> list[dict[str, Any]]:
        """Poll every task until it SUCCEEDED or FAILED; one past its deadline is cancelled (reported as FAILED)."""
        final: dict[str, dict[str, Any]] = {}
        while tasks:
            for task in tasks:
                if task.task_id not in final and (document := await self._poll(task, progress)) is not None:
                    final[task.task_id] = document
            if len(final) == len(tasks):
                return [final[task.task_id] for task in tasks]
            await asyncio.sleep(self.options.poll_interval_s)
        return []

    async def _poll(self, task: _Task, progress: Progress) -> dict[str, Any] | None:
        """The task's document once it is over (cancelled if past its deadline), None while it runs."""
        answer = await self._call(f"task {task.task_id}", lambda c: c.get_task(task.task_id))
        document: dict[str, Any] = dict(answer.data)
        moved = int(document.get("bytes_transferred") or 0)
        if moved > task.reported:
            await progress(moved - task.reported)
            task.reported = moved
        if document.get("status") in _DONE:
            return document
        if time.time() >= task.deadline:
            return await self._cancel(task, document)
        return None

    async def _cancel(self, task: _Task, document: dict[str, Any]) -> dict[str, Any]:
        try:
            await self._call(f"cancelling task {task.task_id}", lambda c: c.cancel_task(task.task_id))
        except GlobusRefused as e:
            if not (isinstance(e.__cause__, globus_sdk.GlobusAPIError) and e.__cause__.http_status == 409):
                raise
            # It ended between the poll and the cancel: what it ended as is the answer.
            answer = await self._call(f"task {task.task_id}", lambda c: c.get_task(task.task_id))
            if answer["status"] in _DONE:
                return dict(answer.data)
            raise GlobusUnavailable(f"Globus refused to cancel task {task.task_id} (409) and it still runs: "
                                    "the batch resumes later") from e
        status = document.get("nice_status") or document.get("status")
        reason = (f"not done by its deadline {_iso(task.deadline)} ({TABLE} deadline_s), last status {status}: "
                  "cancelled")
        return {**document, "status": "FAILED", "obsflow_reason": reason}

    async def _settle(self, peer: PeerSettings, route: GlobusPeer, files: list[FileToSend], task_id: str,
                      document: dict[str, Any]) -> dict[str, Outcome]:
        """Each file's outcome: adopted by the peer's ingest if it landed, else Failed with Globus's reason."""
        if document["status"] != "SUCCEEDED":
            reason = await self._fault(task_id, document)
            return {f.name: Failed(f.name, reason) for f in files}
        outcomes = await self._not_landed(route, files, task_id, document)
        todo = [f for f in files if f.name not in outcomes]
        limit = asyncio.Semaphore(self.options.adopt_concurrency)

        async def adopt(f: FileToSend) -> Outcome:
            async with limit:
                return await self._adopt(peer, f.record, posixpath.join(route.ingest_path, f.name))

        for f, outcome in zip(todo, await asyncio.gather(*(adopt(f) for f in todo)), strict=True):
            outcomes[f.name] = outcome
        return outcomes

    async def _not_landed(self, route: GlobusPeer, files: list[FileToSend], task_id: str,
                          document: dict[str, Any]) -> dict[str, Outcome]:
        """The files of a SUCCEEDED task that did not land: skipped for a source error, or not listed at all."""
        transferred = await self._call(f"successful transfers of task {task_id}",
                                       lambda c: _all_items(c.paginated.task_successful_transfers(task_id)))
        landed = {str(item.get("destination_path")) for item in transferred}
        skipped: dict[str, str] = {}
        if int(document.get("subtasks_skipped_errors") or 0) > 0:
            errors = await self._call(f"skipped errors of task {task_id}",
                                      lambda c: _all_items(c.paginated.task_skipped_errors(task_id)))
            skipped = {str(e.get("destination_path")): f"{e.get('error_code')}: {e.get('error_details')}"
                       for e in errors}
        outcomes: dict[str, Outcome] = {}
        unlisted = []
        for f in files:
            destination = posixpath.join(route.landing_path, f.name)
            if destination in skipped:
                outcomes[f.name] = Failed(f.name, f"Globus task {task_id} skipped it: {skipped[destination]}")
            elif destination not in landed:
                unlisted.append(f)
        # Files a checksum sync found identical at the destination are not "transferred": Globus counts them in
        # files_skipped. Only when that count covers them are they there (and ingest verifies them like the others).
        if len(unlisted) > int(document.get("files_skipped") or 0):
            for f in unlisted:
                outcomes[f.name] = Failed(f.name, f"Globus task {task_id} SUCCEEDED without listing it as transferred")
        return outcomes

    async def _fault(self, task_id: str, document: dict[str, Any]) -> str:
        """Why a task failed: our own reason (a deadline), its fatal error, its status, and its last error event."""
        fatal = document.get("fatal_error") or {}
        reason = document.get("obsflow_reason") or (
            f"{fatal.get('code')}: {fatal.get('description')}" if fatal else None) or (
            f"{document.get('nice_status')}: {document.get('nice_status_details')}")
        events = await self._call(f"events of task {task_id}", lambda c: c.task_event_list(task_id, limit=10))
        errors = [f"{e.get('code')}: {e.get('description')}" for e in events if e.get("is_error")]
        if errors:
            reason = f"{reason}; last error event {errors[0]}"
        return f"Globus task {task_id} failed: {reason}"[:1000]


@dataclass
class _Task:
    task_id: str
    deadline: float  # seconds since the epoch, noted with the submission id: a resumed batch keeps its deadline
    reported: int = 0  # of the task's bytes_transferred, what was passed to `progress` so far


def _all_items(paginator: Any) -> list[dict[str, Any]]:
    return [dict(item) for item in paginator.items()]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
