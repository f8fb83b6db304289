"""HTTP push: the bytes streamed to the destination ingest's replica API with this site's token there.

Each file is announced first (`POST /api/v1/replicas`: a destination that holds it already says so and nothing is
sent), then PUT from this site's verified instance, read in chunks in a thread; the destination verifies size and
checksum before it records an instance. The files of a batch go side by side (the batch is the lane's concurrency).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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
from shared.client.replicas import ReplicaRefused, push_replica
from shared.errors import ObsflowError
from shared.failures import describe, is_transient
from shared.settings import PeerSettings


class HttpPushManager:
    """Sends files to peers' ingest over HTTP."""

    name = "http"

    def __init__(self, *, timeout_s: float = 3600.0, read_timeout_s: float = 60.0) -> None:
        self._session = PeerSession(aiohttp.ClientTimeout(total=timeout_s, sock_read=read_timeout_s, sock_connect=15))

    async def send(
        self, peer: PeerSettings, batch_id: str, files: Sequence[FileToSend], journal: BatchJournal,
        progress: Progress,
    ) -> list[Outcome]:
        base, token = ingest_url(peer), peer_token(peer)
        session = self._session.get()
        return list(await asyncio.gather(*(self._one(session, base, token, f, progress, peer.name) for f in files)))

    async def _one(
        self, session: aiohttp.ClientSession, base: str, token: str, file: FileToSend, progress: Progress, peer: str,
    ) -> Outcome:
        try:
            result = await push_replica(session, base, token, file.record, lambda: open_instance(file),
                                        progress=progress, peer=peer)
        except ReplicaRefused as e:
            return Failed(file.name, str(e), permanent=not e.retryable)
        except ObsflowError as e:
            return Failed(file.name, describe(e), unreachable=is_transient(e))
        return Delivered(file.name, already=result.already)

    async def close(self) -> None:
        await self._session.close()
