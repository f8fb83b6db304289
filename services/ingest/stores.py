"""Stores a site manages, how full they are, and which one takes a new file.

A store is a POSIX tree ``<root>/staging/`` (uploads and copies in progress) and ``<root>/main/``
(minted files, immutable). Both are on one filesystem so a commit is a single rename.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    """How full a store is: bytes the service has recorded in it and bytes the filesystem has free."""

    used_bytes: int
    disk_free_bytes: int

    def room_bytes(self, store: StoreConfig) -> int:
        """Bytes a new file may take: the smaller of the capacity left and the disk's free space."""
        return max(0, min(store.capacity_bytes - self.used_bytes, self.disk_free_bytes))


class NoStoreAvailable(RuntimeError):
    """No online store has room for a file (the message lists why each store was passed over)."""


def measure_usage(store: StoreConfig, tracked_used_bytes: int) -> StoreUsage:
    """Combine the bytes the service tracks in a store with the filesystem's free space (blocking)."""
    return StoreUsage(used_bytes=tracked_used_bytes, disk_free_bytes=shutil.disk_usage(store.root).free)


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
        return f"store {store.name!r} has no usage measurement yet"
    room = usage.room_bytes(store)
    if room < size:
        return f"store {store.name!r} has room for {room} bytes"
    return None


def choose_store(stores: Sequence[StoreConfig], usage: Mapping[str, StoreUsage], size: int) -> StoreConfig:
    """The first online store with room for size bytes; raise NoStoreAvailable saying why none fits."""
    reasons = []
    for store in stores:
        reason = _why_not(store, usage.get(store.name), size)
        if reason is None:
            return store
        reasons.append(reason)
    detail = "; ".join(reasons) if reasons else "no stores are configured"
    raise NoStoreAvailable(
        f"no store can take a file of {size} bytes ({detail}); free space, raise a capacity, "
        "or bring a store online"
    )
