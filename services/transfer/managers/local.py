"""Local: the destination reads a directory this site can write (a shared mount). The bytes are copied into the
peer's `landing_dir` (one of the peer ingest's source roots), then the peer's ingest is asked to adopt them
(`POST /api/v1/replicas/local`): it copies them into its store in one verified pass and records the instance. The
landed copy is removed once the destination has answered."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from services.transfer.managers.base import (
    BatchJournal,
    Delivered,
    Failed,
    FileToSend,
    Outcome,
    Progress,
    open_instance,
)
from services.transfer.peer_access import PeerSession, ingest_url, peer_token
from shared.api.ingest import ReplicaFile
from shared.client.replicas import ReplicaRefused, adopt_local_replica
from shared.errors import ConfigurationError, ObsflowError
from shared.failures import describe, is_transient
from shared.settings import PeerSettings

CHUNK = 8 * 1024 * 1024


class LocalManager:
    """Copies files into peers' landing directories and has the peers adopt them."""

    name = "local"

    def __init__(self, *, timeout_s: float = 3600.0) -> None:
        self._session = PeerSession(aiohttp.ClientTimeout(total=timeout_s, sock_connect=15))

    async def send(
        self, peer: PeerSettings, batch_id: str, files: Sequence[FileToSend], journal: BatchJournal,
        progress: Progress,
    ) -> list[Outcome]:
        if peer.landing_dir is None:
            raise ConfigurationError(f"peer {peer.name!r} uses the local manager but has no landing_dir")
        base, token = ingest_url(peer), peer_token(peer)
        landing = peer.landing_dir / batch_id
        try:
            outcomes = []
            for file in files:  # one after another: the copy is bound by one disk, not by round trips
                outcomes.append(await self._one(self._session.get(), base, token, landing, file, progress))
            return outcomes
        finally:
            await asyncio.to_thread(shutil.rmtree, landing, True)

    async def _one(
        self, session: aiohttp.ClientSession, base: str, token: str, landing: Path, file: FileToSend,
        progress: Progress,
    ) -> Outcome:
        target = landing / file.name
        try:
            copied = await asyncio.to_thread(_land, file, target)
        except OSError as e:
            return Failed(file.name, f"cannot copy it into {landing}: {e.strerror or e}")
        await progress(copied)
        try:
            return await _adopt(session, base, token, file.record, str(target))
        finally:
            await asyncio.to_thread(_remove, target)

    async def adopt(self, peer: PeerSettings, record: ReplicaFile, path: str) -> Outcome:
        """Ask `peer`'s ingest to adopt the bytes at `path` (as the peer sees them) as its instance of `record`:
        what the Globus manager does with each file that landed."""
        return await _adopt(self._session.get(), ingest_url(peer), peer_token(peer), record, path)

    async def close(self) -> None:
        await self._session.close()


async def _adopt(session: aiohttp.ClientSession, base: str, token: str, record: ReplicaFile, path: str) -> Outcome:
    try:
        result = await adopt_local_replica(session, base, token, record, path)
    except ReplicaRefused as e:
        return Failed(record.name, str(e), permanent=not e.retryable)
    except ObsflowError as e:
        return Failed(record.name, describe(e), unreachable=is_transient(e))
    return Delivered(record.name, already=result.already)


def _land(file: FileToSend, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    copied = 0
    with open_instance(file) as source, open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            copied += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return copied


def _remove(target: Path) -> None:
    target.unlink(missing_ok=True)
