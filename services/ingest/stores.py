"""Stores a site manages, how full they are, and which one takes a new file.

A store is a POSIX tree ``<root>/staging/`` (uploads and copies in progress) and ``<root>/main/``
(minted files, immutable). Both are on one filesystem so a commit is a single rename.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

STAGING_DIR_NAME = "staging"
MAIN_DIR_NAME = "main"


class StoreState(StrEnum):
    """online: takes new files; read-only: serves only; sneaker: a removable drive filled by transfers."""

    ONLINE = "online"
    READ_ONLY = "read-only"
    SNEAKER = "sneaker"
    DISABLED = "disabled"


class StoreConfig(BaseModel):
    """One store as configured by the operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    root: Path
    capacity_bytes: int = Field(ge=0)
    state: StoreState = StoreState.ONLINE

    @field_validator("root")
    @classmethod
    def _root_is_absolute(cls, root: Path) -> Path:
        if not root.is_absolute():
            raise ValueError(f"a store root must be an absolute path, got {str(root)!r}")
        return root

    @property
    def staging_dir(self) -> Path:
        """Where uploads and copies in progress live."""
        return self.root / STAGING_DIR_NAME

    @property
    def main_dir(self) -> Path:
        """Where minted files live."""
        return self.root / MAIN_DIR_NAME


@dataclass(frozen=True)
class StoreUsage:
    """How full a store is: bytes minted into it, bytes reserved by work in progress, bytes free on its disk."""

    used_bytes: int
    disk_free_bytes: int
    reserved_bytes: int = 0

    def room_bytes(self, store: StoreConfig) -> int:
        """Bytes a new file may take: the capacity left and the disk's free space, each after the reservations.

        A reservation not yet written is a promise on the free space; one being written is counted twice until
        it is minted (cautious: it delays a file, never overfills a disk).
        """
        capacity_left = store.capacity_bytes - self.used_bytes - self.reserved_bytes
        return max(0, min(capacity_left, self.disk_free_bytes - self.reserved_bytes))


@dataclass(frozen=True)
class NoRoom:
    """No store can take a file now: a condition that passes when room appears, not a verdict on the file."""

    size: int
    reason: str


def ensure_store_layout(store: StoreConfig) -> None:
    """Create ``<root>/staging`` and ``<root>/main`` if missing (the root itself must exist)."""
    if not store.root.is_dir():
        raise FileNotFoundError(
            f"store {store.name!r}: root {store.root} does not exist or is not a directory; "
            "mount the disk or fix the store's root in the configuration"
        )
    store.staging_dir.mkdir(exist_ok=True)
    store.main_dir.mkdir(exist_ok=True)


def _why_not(store: StoreConfig, usage: StoreUsage | None, size: int) -> str | None:
    if store.state is not StoreState.ONLINE:
        return f"store {store.name!r} is {store.state.value}"
    if usage is None:
        return f"store {store.name!r} cannot be measured (is its disk mounted?)"
    room = usage.room_bytes(store)
    if room < size:
        return f"store {store.name!r} has room for {room} bytes"
    return None


def place_files(
    stores: Sequence[StoreConfig], usage: Mapping[str, StoreUsage], sizes: Sequence[int]
) -> list[StoreConfig | NoRoom]:
    """Each size, in order, to the first online store with room, counting the sizes placed before it."""
    placed: dict[str, int] = {}
    answers: list[StoreConfig | NoRoom] = []
    for size in sizes:
        reasons = []
        for store in stores:
            known = usage.get(store.name)
            if known is not None:
                known = replace(known, reserved_bytes=known.reserved_bytes + placed.get(store.name, 0))
            reason = _why_not(store, known, size)
            if reason is None:
                placed[store.name] = placed.get(store.name, 0) + size
                answers.append(store)
                break
            reasons.append(reason)
        else:
            detail = "; ".join(reasons) if reasons else "no stores are configured"
            answers.append(NoRoom(size, f"no store can take a file of {size} bytes now ({detail}); free space, "
                                        "raise a capacity, or bring a store online"))
    return answers


def choose_store(stores: Sequence[StoreConfig], usage: Mapping[str, StoreUsage], size: int) -> StoreConfig | NoRoom:
    """The first online store with room for `size` bytes, or why none has."""
    return place_files(stores, usage, [size])[0]


def admit_at_mint(store: StoreConfig, committed_bytes: int, growths: Sequence[int]) -> list[bool]:
    """Which files may be minted into `store`, in order, so that it never holds more than its capacity.

    `committed_bytes` is what the store holds and has promised (minted + reserved, the files' own reservations
    included); minting turns a file's reservation into use, so each file adds only what it grew beyond its
    reservation (`growths`, 0 for a file of exactly its reserved size).
    """
    admitted = []
    for growth in growths:
        fits = committed_bytes + growth <= store.capacity_bytes
        if fits:
            committed_bytes += growth
        admitted.append(fits)
    return admitted
