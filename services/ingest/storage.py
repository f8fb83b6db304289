"""The site's stores at run time: their staging areas, how full they are (as metrics), grouped directory fsyncs."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Gauge

from services.ingest.repository import (
    PendingUpload,
    committed_bytes,
    extend_upload,
    forget_upload,
    insert_upload,
    lock_store_usage,
    pending_upload_of,
    reservations_of,
    reserve_copies,
    reserved_bytes_by_store,
    used_bytes_by_store,
)
from services.ingest.staging import AlreadyInStore, StagingArea
from services.ingest.stores import (
    NoRoom,
    StoreConfig,
    StoreState,
    StoreUsage,
    admit_at_mint,
    choose_store,
    place_files,
)
from shared.batching import Batcher
from shared.errors import ConfigurationError, TransientError
from shared.failures import translate_storage_errors
from shared.periodic import every
from shared.settings import StoreSettings

log = structlog.get_logger()

UNBOUNDED = 2**62  # capacity 0 in the settings means: bounded by the disk only


class GroupCommit:
    """Commits staged entries into a store in batches: rename each, then fsync the directories once.

    Staged entries arrive durable: whoever writes one fsyncs its data (`copy_and_checksum`, the tree copy,
    `ChecksummingWriter.finish`), in its own thread, where concurrent writers share journal commits. Every
    commit waiting while a batch runs joins the next one, so concurrent ingests share the directory fsyncs
    instead of paying one each. Data is durable before its rename, and the rename before the caller's
    transaction says the file exists. (A second fsync of each file here cost ~0.5 ms a file for nothing.)
    """

    def __init__(self, area: StagingArea) -> None:
        self._batches: Batcher[tuple[Path, str], Path] = Batcher(
            lambda batch: asyncio.to_thread(_commit_batch, area, batch)
        )

    async def commit_many(self, entries: Sequence[tuple[Path, str]]) -> list[Path]:
        """Rename the (durable) staged entries to main/<name>, durably, in one batch; return the final paths.

        Raises the first entry's error, if any."""
        return await self._batches.submit_many(list(entries))


def _commit_batch(area: StagingArea, batch: list[tuple[Path, str]]) -> list[Path | BaseException]:
    outcomes: list[Path | BaseException] = []
    for staged, name in batch:
        try:
            outcomes.append(commit_no_replace(area, staged, name))
        except (OSError, ValueError) as e:
            outcomes.append(e)
    area.sync()  # main/ and staging/ once for the whole batch
    return outcomes


def commit_no_replace(area: StagingArea, staged: Path, name: str) -> Path:
    """Rename staged → main/<name> (directory fsyncs deferred); replaces only an unminted leftover.

    The caller holds the files row of `name` in its open transaction, so whatever sits in main under that name
    is the leftover of an attempt whose rename succeeded and whose transaction did not commit: never minted.
    """
    try:
        return area.commit(staged, name, sync=False)
    except AlreadyInStore:
        log.warning("unminted_leftover_replaced", path=str(area.main_dir / name))
        area.remove_unminted(name)  # beneath the store root, never through a link
        return area.commit(staged, name, sync=False)


class StoreSet:
    """The configured stores, their staging areas, their room (counting reservations) and the gauges Prometheus reads.

    Room is decided in PostgreSQL, under a lock on each store's usage row, from facts: the bytes of its instances
    (`store_usage`) and the reservations of pending uploads and copies in progress (`uploads` rows). So two
    announcements that each fit but not together never both get a place, whichever processes they reach, and a
    mint never commits a file into a store that its capacity, counting reservations, cannot hold.
    """

    def __init__(
        self, stores: Sequence[StoreConfig], registry: CollectorRegistry, *, created_when_missing: Sequence[str] = ()
    ) -> None:
        self.configs = list(stores)
        self.created_when_missing = frozenset(created_when_missing)  # the zero-configuration default store
        self.by_name = {s.name: s for s in self.configs}
        self.areas = {s.name: StagingArea(s.root) for s in self.configs}
        self._commits = {name: GroupCommit(area) for name, area in self.areas.items()}
        self._used: dict[str, int] = {}
        self.refreshed = asyncio.Event()  # set after each usage refresh: room may have appeared
        self.free_gauge = Gauge(
            "obsflow_store_free_bytes", "Bytes free on the disk of each store", ["store"], registry=registry
        )
        self.used_gauge = Gauge(
            "obsflow_store_used_bytes", "Bytes of verified instances on each store", ["store"], registry=registry
        )
        self.reserved_gauge = Gauge(
            "obsflow_store_reserved_bytes", "Bytes reserved on each store by pending uploads and copies in progress",
            ["store"], registry=registry,
        )

    @classmethod
    def from_settings(cls, stores: Sequence[StoreSettings], registry: CollectorRegistry) -> StoreSet:
        """The stores of the site's settings (capacity 0: bounded by the disk only)."""
        configs = []
        for s in stores:
            try:
                configs.append(StoreConfig(
                    name=s.name, root=s.root, capacity_bytes=s.capacity_bytes or UNBOUNDED, state=StoreState(s.state)
                ))
            except ValueError as e:
                raise ConfigurationError(f"store {s.name!r} is misconfigured: {e}") from e
        return cls(configs, registry, created_when_missing=[s.name for s in stores if s.zero_config])

    def prepare(self) -> None:
        """Create each store's staging and main areas (blocking). A configured store's root must exist; the default
        store of a site that configures none (`<data_dir>/stores/main`) is created on first start."""
        for store in self.configs:
            if store.state is StoreState.DISABLED:
                continue
            # Nothing at all there: a link (to an unmounted disk, say) is left for the check below to refuse.
            if store.name in self.created_when_missing and not os.path.lexists(store.root):
                store.root.mkdir(parents=True, exist_ok=True)
                log.info("default_store_created", store=store.name, root=str(store.root))
            if not store.root.is_dir():
                raise ConfigurationError(
                    f"store {store.name!r}: root {store.root} does not exist or is not a directory; "
                    "mount the disk or fix `stores` in the configuration"
                )
            self.areas[store.name].ensure_layout()

    def area(self, store: str) -> StagingArea:
        """The staging area of a store by name."""
        return self.areas[store]

    @property
    def online(self) -> list[StoreConfig]:
        """The stores that take new files."""
        return [s for s in self.configs if s.state is StoreState.ONLINE]

    async def _disk_free(self) -> dict[str, int]:
        """Free bytes on each online store's disk, measured now (a store whose root is missing is left out)."""
        return await asyncio.to_thread(_disk_free_of, self.online)

    async def _usage(self, conn: asyncpg.Connection, excluding: Sequence[str] = ()) -> dict[str, StoreUsage]:
        """Each online store's usage, its row locked until the caller's transaction ends."""
        free = await self._disk_free()
        used = await lock_store_usage(conn, [s.name for s in self.online])
        reserved = await reserved_bytes_by_store(conn, excluding)
        return {name: StoreUsage(used.get(name, 0), disk, reserved.get(name, 0)) for name, disk in free.items()}

    async def reserve_upload(self, pool: asyncpg.Pool, wanted: PendingUpload) -> tuple[PendingUpload, bool] | NoRoom:
        """The account's pending upload of this claim (announced again: found, its expiry pushed back), or a new
        one reserving its size on a store with room (True), or why no store has room.

        The account's pending upload of the same name with another size or checksum (or another kind, or a replica
        of another record) is replaced: one upload per account and name, so a corrected announcement does not leave
        the old one's reservation behind.
        """
        async with pool.acquire() as conn, conn.transaction():
            usage = await self._usage(conn)
            existing = await pending_upload_of(conn, wanted.uploader, wanted.name)
            if existing is not None:
                same = (existing.kind, existing.claim, existing.replica) == (wanted.kind, wanted.claim, wanted.replica)
                if same and existing.store in usage:
                    await extend_upload(conn, existing.upload_id, wanted.expires_at)
                    return replace(existing, expires_at=wanted.expires_at), False
                await forget_upload(conn, existing.upload_id)
                log.info("upload_replaced", upload_id=existing.upload_id, name=existing.name,
                         by=wanted.upload_id, uploader=wanted.uploader)
                usage = {name: replace(u, reserved_bytes=u.reserved_bytes - existing.size)
                         if name == existing.store else u for name, u in usage.items()}
            place = choose_store(self.configs, usage, wanted.size)
            if isinstance(place, NoRoom):
                return place
            upload = replace(wanted, store=place.name)
            if not await insert_upload(conn, upload):  # only if another process has other stores online
                raise TransientError(f"{wanted.name} is being announced by {wanted.uploader} at the same moment")
            return upload, True

    async def reserve_copies(self, pool: asyncpg.Pool, copies: Sequence[PendingUpload]) -> list[PendingUpload | NoRoom]:
        """Reserve room for copies about to be staged, first fit in order: each one's row (its store set) or NoRoom.

        A row of the same id (a crashed attempt of the same announcement) is taken over, not counted twice.
        """
        if not copies:
            return []
        async with pool.acquire() as conn, conn.transaction():
            usage = await self._usage(conn, excluding=[c.upload_id for c in copies])
            placed = place_files(self.configs, usage, [c.size for c in copies])
            reserved = [replace(c, store=p.name) for c, p in zip(copies, placed, strict=True)
                        if not isinstance(p, NoRoom)]
            await reserve_copies(conn, reserved)
        rows = iter(reserved)
        return [p if isinstance(p, NoRoom) else next(rows) for p in placed]

    async def admit(self, conn: asyncpg.Connection, entries: Sequence[tuple[str, str, int]]) -> list[NoRoom | None]:
        """In the minting transaction: which of `entries` `(upload id, store, size)` may be minted (None) without
        taking a store past its capacity, counting every reservation; why not, for the others.

        A file of at most its reserved size cannot break what the reservations keep (minted + reserved within the
        capacity), so no lock is taken for it: a batch waiting on the stores' locks through its fsync round would
        keep the next batch from reserving, and copying, meanwhile. Only a file that grew beyond its reservation
        needs the stores locked (all of the batch's, in name order, before the instances' trigger touches them).
        """
        names = sorted({store for _, store, _ in entries})
        own = await reservations_of(conn, [upload_id for upload_id, _, _ in entries])
        growths = [size - own.get(upload_id, 0) for upload_id, _, size in entries]
        if any(growth > 0 for growth in growths):
            await lock_store_usage(conn, names)
        committed = await committed_bytes(conn, names)
        answers: list[NoRoom | None] = [None] * len(entries)
        for name in names:
            mine = [i for i, (_, store, _) in enumerate(entries) if store == name]
            config = self.by_name.get(name)
            if config is None or config.state is not StoreState.ONLINE:
                why = "is not configured here" if config is None else f"is {config.state.value}"
                for i in mine:
                    answers[i] = NoRoom(entries[i][2], f"store {name!r} {why} now; announce the file again to have "
                                        "it placed in a store that takes files")
                continue
            for i, fits in zip(mine, admit_at_mint(config, committed[name], [growths[i] for i in mine]), strict=True):
                if not fits:
                    answers[i] = NoRoom(entries[i][2], f"store {name!r} has no room left for {entries[i][2]} bytes: "
                                        f"its capacity of {config.capacity_bytes} bytes is taken by minted files and "
                                        "reservations; free space, raise a capacity, or bring a store online")
        return answers

    async def largest_room(self, pool: asyncpg.Pool) -> int:
        """The most bytes one new file could get now (an estimate, taken without locks)."""
        free = await self._disk_free()
        used = await used_bytes_by_store(pool)
        reserved = await reserved_bytes_by_store(pool)
        rooms = [StoreUsage(used.get(s.name, 0), free[s.name], reserved.get(s.name, 0)).room_bytes(s)
                 for s in self.online if s.name in free]
        return max(rooms, default=0)

    async def commit_many(self, store: str, entries: Sequence[tuple[Path, str]]) -> list[Path]:
        """Durably move several staged entries into `store`'s main area in one batch; return the final paths."""
        return await self._commits[store].commit_many(entries)

    def record_minted(self, store: str, size: int) -> None:
        """Count a new instance's bytes against its store (the gauge; the database counts for itself)."""
        self._used[store] = self._used.get(store, 0) + size
        self.used_gauge.labels(store).set(self._used[store])

    async def refresh_usage(self, pool: asyncpg.Pool) -> None:
        """Re-read the bytes each store holds and has reserved, and each disk's free space; update the gauges.

        Then wake whoever waits for room (`refreshed`): a disk grown or emptied shows here.
        """
        self._used = await used_bytes_by_store(pool)
        reserved = await reserved_bytes_by_store(pool)
        for store in self.configs:
            self.used_gauge.labels(store.name).set(self._used.get(store.name, 0))
            self.reserved_gauge.labels(store.name).set(reserved.get(store.name, 0))
        for name, free in (await self._disk_free()).items():
            self.free_gauge.labels(name).set(free)
        self.refreshed.set()

    async def refresh_forever(self, pool: asyncpg.Pool, stop: asyncio.Event, interval_s: float) -> None:
        """Refresh usage every `interval_s` until `stop` is set (a store's file system failing: next round)."""

        async def refresh() -> None:
            with translate_storage_errors("measuring the stores"):
                await self.refresh_usage(pool)

        await every(interval_s, refresh, stop, name="store_usage_refresh")


def _disk_free_of(stores: Sequence[StoreConfig]) -> dict[str, int]:
    free = {}
    for store in stores:
        try:
            free[store.name] = shutil.disk_usage(store.root).free
        except OSError as e:  # not mounted, gone: it takes nothing until it is back
            log.warning("store_unmeasurable", store=store.name, root=str(store.root), error=str(e))
    return free
