"""What every transfer manager implements: send a batch of files to a peer, each file with its own outcome.

The dispatcher records a batch (its id and files) before it calls `send`, so a batch interrupted by a crash is sent
again with the same id: a manager that submits work elsewhere (Globus) keeps what it submitted in the batch's
`journal` and, handed the same batch again, resumes it instead of submitting it twice. The destination verifies
every byte against the minted checksum before it records anything; a manager reports what the destination said.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from shared.api.ingest import ReplicaFile
from shared.safe_paths import UnsafePath, open_beneath
from shared.settings import PeerSettings


@dataclass(frozen=True)
class FileToSend:
    """One file of a batch: its minted metadata and where this site's verified instance of it lies."""

    record: ReplicaFile
    store_root: Path  # the store the instance is on (its root, as configured)
    path: Path  # the instance's path, beneath store_root

    @property
    def name(self) -> str:
        return self.record.name


def open_instance(file: FileToSend) -> BinaryIO:
    """This site's copy of `file`, opened beneath its store's root without following any link (blocking)."""
    relative = os.path.relpath(file.path, file.store_root)
    if relative.startswith(".."):
        raise UnsafePath(f"{file.path} is not beneath its store's root {file.store_root}")
    return os.fdopen(open_beneath(file.store_root, relative), "rb")


@dataclass(frozen=True)
class Delivered:
    """The destination verified the bytes and holds an instance (`already` if it held one before this batch)."""

    name: str
    already: bool = False


@dataclass(frozen=True)
class Failed:
    """The destination has no instance from this attempt: why, and whether trying again can ever help."""

    name: str
    reason: str
    permanent: bool = False  # e.g. another file by that name at the destination: retrying changes nothing
    # The peer could not be reached (the link or the peer is down): the link's fault, not the file's. It does not use
    # up the file's attempts, however long the outage; the lane waits and tries again.
    unreachable: bool = False


Outcome = Delivered | Failed


class BatchJournal(Protocol):
    """A batch's durable notes (in the transfer schema): what a manager must remember across a crash."""

    async def recall(self) -> dict[str, Any]:
        """What was noted for this batch so far (empty for a new one)."""
        ...

    async def note(self, values: dict[str, Any]) -> None:
        """Merge `values` into the batch's notes, durably, before returning."""
        ...


Progress = Callable[[int], Awaitable[None]]  # bytes sent since the last call (bandwidth caps, figures)


class TransferManager(Protocol):
    """A way to move bytes to a peer."""

    name: str

    async def send(
        self, peer: PeerSettings, batch_id: str, files: Sequence[FileToSend], journal: BatchJournal,
        progress: Progress,
    ) -> list[Outcome]:
        """Deliver `files` to `peer` (one outcome per file, in order). Raise only for a failure of the whole batch
        that is not about its files (the peer unreachable: TransientError); a file's own failure is its Failed."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
