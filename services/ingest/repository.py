"""The ingest schema's SQL: files, instances and uploads in progress."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg

from services.ingest.minting import Claim, ExistingFile
from shared.api.ingest import IngestedFile, LocalInstance, ReplicaFile
from shared.bus.dead_letters import record_dead_letter

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class NewFile:
    """A file about to be minted, with everything its row and its event need."""

    name: str
    size: int
    checksum: str
    md5: str | None
    file_type: str
    is_directory: bool
    observation_id: str | None
    start_jd: float | None
    duration_s: float | None
    origin_site: str
    uploader: str
    metadata: dict[str, Any] | None
    created_at: datetime | None = None  # None: now (minted here); a replica keeps its origin's


@dataclass(frozen=True)
class PendingUpload:
    """An HTTP upload announced and not yet minted, a replica waiting for its bytes (`replica` keeps the origin's
    record), or a copy in progress: each reserves its size on its store."""

    upload_id: str
    kind: str
    name: str
    size: int  # the bytes it reserves on `store`
    checksum: str | None
    file_type: str
    store: str
    uploader: str
    metadata: dict[str, Any] | None
    expires_at: datetime
    replica: ReplicaFile | None = None

    @property
    def claim(self) -> Claim:
        """What was announced for it."""
        return Claim(self.name, self.file_type, self.size, self.checksum)


_FILE_COLUMNS = "name, size, checksum, md5"


def _existing(row: asyncpg.Record | None) -> ExistingFile | None:
    return ExistingFile(row["name"], row["size"], row["checksum"], row["md5"]) if row else None


async def find_file(db: Executor, name: str) -> ExistingFile | None:
    """The file minted under `name`, if any."""
    return _existing(await db.fetchrow(f"SELECT {_FILE_COLUMNS} FROM files WHERE name = $1", name))


async def find_files(db: Executor, names: list[str]) -> dict[str, ExistingFile]:
    """The files minted under any of `names`, by name."""
    if not names:
        return {}
    rows = await db.fetch(f"SELECT {_FILE_COLUMNS} FROM files WHERE name = ANY($1::text[])", names)
    return {row["name"]: ExistingFile(row["name"], row["size"], row["checksum"], row["md5"]) for row in rows}


async def insert_file(conn: asyncpg.Connection, new: NewFile) -> datetime | None:
    """Insert the file row; None if the name is taken (a concurrent minter waits here for the other's commit)."""
    return await conn.fetchval(
        "INSERT INTO files (name, size, checksum, md5, file_type, is_directory, observation_id, start_jd,"
        " duration_s, origin_site, uploader, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (name) DO NOTHING RETURNING created_at",
        new.name, new.size, new.checksum, new.md5, new.file_type, new.is_directory, new.observation_id,
        new.start_jd, new.duration_s, new.origin_site, new.uploader,
        json.dumps(new.metadata) if new.metadata is not None else None,
    )


async def insert_files(conn: asyncpg.Connection, news: list[NewFile]) -> dict[str, datetime]:
    """Insert file rows in one statement; the names inserted with their creation time (taken names are skipped).

    Like insert_file, a concurrent minter of one of these names makes this wait for the other's commit.
    """
    if not news:
        return {}
    columns = [
        [n.name for n in news], [n.size for n in news], [n.checksum for n in news], [n.md5 for n in news],
        [n.file_type for n in news], [n.is_directory for n in news], [n.observation_id for n in news],
        [n.start_jd for n in news], [n.duration_s for n in news], [n.origin_site for n in news],
        [n.uploader for n in news], [json.dumps(n.metadata) if n.metadata is not None else None for n in news],
        [n.created_at for n in news],
    ]
    rows = await conn.fetch(
        "INSERT INTO files (name, size, checksum, md5, file_type, is_directory, observation_id, start_jd,"
        " duration_s, origin_site, uploader, metadata, created_at) SELECT name, size, checksum, md5, file_type,"
        " is_directory, observation_id, start_jd, duration_s, origin_site, uploader, metadata::jsonb,"
        " COALESCE(created_at, now()) FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],"
        " $6::boolean[], $7::text[], $8::float8[], $9::float8[], $10::text[], $11::text[], $12::text[],"
        " $13::timestamptz[]) AS new (name, size, checksum, md5, file_type, is_directory, observation_id, start_jd,"
        " duration_s, origin_site, uploader, metadata, created_at)"
        " ON CONFLICT (name) DO NOTHING RETURNING name, created_at",
        *columns,
    )
    return {r["name"]: r["created_at"] for r in rows}


async def insert_instance(conn: asyncpg.Connection, file_name: str, store: str, path: str, size: int) -> datetime:
    """Record a verified copy; return when it was verified."""
    return await conn.fetchval(
        "INSERT INTO instances (file_name, store, path, size) VALUES ($1, $2, $3, $4) RETURNING verified_at",
        file_name, store, path, size,
    )


async def insert_instances(conn: asyncpg.Connection, rows: list[tuple[str, str, str, int]]) -> dict[str, datetime]:
    """Record verified copies `(file_name, store, path, size)` in one statement; when each was verified, by name."""
    if not rows:
        return {}
    names, stores, paths, sizes = (list(column) for column in zip(*rows, strict=True))
    recorded = await conn.fetch(
        "INSERT INTO instances (file_name, store, path, size)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) RETURNING file_name, verified_at",
        names, stores, paths, sizes,
    )
    return {r["file_name"]: r["verified_at"] for r in recorded}


async def file_document(db: Executor, name: str) -> IngestedFile | None:
    """A file and its local instances as the HTTP API returns them."""
    async with _one_connection(db) as conn:
        row = await conn.fetchrow(
            "SELECT name, size, checksum, md5, file_type, is_directory, observation_id, start_jd, duration_s,"
            " origin_site, uploader, created_at FROM files WHERE name = $1", name,
        )
        if row is None:
            return None
        instances = await conn.fetch(
            "SELECT store, path, size, verified_at FROM instances WHERE file_name = $1 ORDER BY store, path", name
        )
    return IngestedFile(**dict(row), instances=[LocalInstance(**dict(r)) for r in instances])


def file_document_of(
    new: NewFile, created_at: datetime, instances: list[tuple[str, str, int, datetime]]
) -> IngestedFile:
    """The document `file_document` reads back for a file just minted, from what minting it knew."""
    return IngestedFile(
        name=new.name, size=new.size, checksum=new.checksum, md5=new.md5, file_type=new.file_type,
        is_directory=new.is_directory, observation_id=new.observation_id, start_jd=new.start_jd,
        duration_s=new.duration_s, origin_site=new.origin_site, uploader=new.uploader, created_at=created_at,
        instances=[LocalInstance(store=store, path=path, size=size, verified_at=verified_at)
                   for store, path, size, verified_at in sorted(instances)],
    )


@contextlib.asynccontextmanager
async def _one_connection(db: Executor) -> AsyncIterator[asyncpg.Connection]:
    """`db` itself, or one connection of it held for several statements (one pool round trip, not one each)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def used_bytes_by_store(db: Executor) -> dict[str, int]:
    """Bytes of the instances on each store (kept by the database as instances come and go)."""
    rows = await db.fetch("SELECT store, used_bytes FROM store_usage")
    return {r["store"]: int(r["used_bytes"]) for r in rows}


async def lock_store_usage(conn: asyncpg.Connection, stores: Sequence[str]) -> dict[str, int]:
    """Lock the usage rows of `stores` until the transaction ends (created if missing); the bytes minted into each.

    Locked in name order, so two transactions locking overlapping stores never wait on each other in a cycle.
    """
    rows = await conn.fetch(
        "INSERT INTO store_usage (store) SELECT s FROM unnest($1::text[]) AS s ORDER BY s"
        " ON CONFLICT (store) DO UPDATE SET used_bytes = store_usage.used_bytes RETURNING store, used_bytes",
        sorted(set(stores)),
    )
    return {r["store"]: int(r["used_bytes"]) for r in rows}


async def reserved_bytes_by_store(db: Executor, excluding: Sequence[str] = ()) -> dict[str, int]:
    """Bytes reserved on each store by pending uploads and copies in progress (but those of `excluding`)."""
    rows = await db.fetch(
        "SELECT store, sum(size)::bigint AS reserved FROM uploads WHERE NOT (upload_id = ANY($1::text[]))"
        " GROUP BY store", list(excluding),
    )
    return {r["store"]: int(r["reserved"]) for r in rows}


async def committed_bytes(db: Executor, stores: Sequence[str]) -> dict[str, int]:
    """What each store holds and has promised: bytes minted into it plus bytes reserved in it."""
    rows = await db.fetch(
        "SELECT s.store, COALESCE(u.used_bytes, 0) + COALESCE(r.reserved, 0) AS committed"
        " FROM unnest($1::text[]) AS s (store) LEFT JOIN store_usage AS u USING (store)"
        " LEFT JOIN (SELECT store, sum(size) AS reserved FROM uploads WHERE store = ANY($1::text[]) GROUP BY store)"
        " AS r USING (store)",
        list(stores),
    )
    return {r["store"]: int(r["committed"]) for r in rows}


async def reservations_of(db: Executor, upload_ids: Sequence[str]) -> dict[str, int]:
    """The bytes each of these uploads reserved, by upload id (those with a row)."""
    rows = await db.fetch("SELECT upload_id, size FROM uploads WHERE upload_id = ANY($1::text[])", list(upload_ids))
    return {r["upload_id"]: int(r["size"]) for r in rows}


_UPLOAD_COLUMNS = "upload_id, kind, name, size, checksum, file_type, store, uploader, metadata, expires_at, replica"
_UPLOAD_VALUES = (
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],"
    " $8::text[], $9::jsonb[], $10::timestamptz[], $11::jsonb[])"
)
# The kinds of upload that wait for their bytes over HTTP (one pending per account and name: uploads_claim).
_SENT = "kind IN ('http', 'replica')"


def _upload(row: asyncpg.Record | None) -> PendingUpload | None:
    if row is None:
        return None
    values = dict(row)
    values["metadata"] = json.loads(values["metadata"]) if values["metadata"] is not None else None
    replica = values["replica"]
    values["replica"] = ReplicaFile.model_validate_json(replica) if replica is not None else None
    return PendingUpload(**values)


def _upload_columns(uploads: Sequence[PendingUpload]) -> list[list[Any]]:
    return [
        [u.upload_id for u in uploads], [u.kind for u in uploads], [u.name for u in uploads],
        [u.size for u in uploads], [u.checksum for u in uploads], [u.file_type for u in uploads],
        [u.store for u in uploads], [u.uploader for u in uploads],
        [json.dumps(u.metadata) if u.metadata is not None else None for u in uploads],
        [u.expires_at for u in uploads],
        [u.replica.model_dump_json() if u.replica is not None else None for u in uploads],
    ]


async def insert_upload(conn: asyncpg.Connection, upload: PendingUpload) -> bool:
    """Record a new HTTP upload or replica (its reservation); False if the account has one of that name already."""
    inserted = await conn.fetchval(
        f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) {_UPLOAD_VALUES}"
        f" ON CONFLICT (uploader, name) WHERE {_SENT} DO NOTHING RETURNING true",
        *_upload_columns([upload]),
    )
    return bool(inserted)


async def reserve_copies(conn: asyncpg.Connection, copies: Sequence[PendingUpload]) -> None:
    """Record copies in progress (their reservations) in one statement; a crashed attempt's row is taken over."""
    if copies:
        await conn.execute(
            f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) {_UPLOAD_VALUES} ON CONFLICT (upload_id) DO UPDATE SET"
            " store = EXCLUDED.store, size = EXCLUDED.size, expires_at = EXCLUDED.expires_at",
            *_upload_columns(copies),
        )


async def pending_upload_of(conn: asyncpg.Connection, uploader: str, name: str) -> PendingUpload | None:
    """The account's pending HTTP upload or replica of `name`, locked until the transaction ends."""
    return _upload(await conn.fetchrow(
        f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE {_SENT} AND uploader = $1 AND name = $2 FOR UPDATE",
        uploader, name,
    ))


async def find_upload(db: Executor, upload_id: str) -> PendingUpload | None:
    """A pending upload by id."""
    return _upload(await db.fetchrow(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE upload_id = $1", upload_id))


async def forget_upload(db: Executor, upload_id: str) -> None:
    """Drop an upload's row (minted, refused or expired)."""
    await db.execute("DELETE FROM uploads WHERE upload_id = $1", upload_id)


async def forget_uploads(db: Executor, upload_ids: list[str]) -> None:
    """Drop several uploads' rows in one statement."""
    if upload_ids:
        await db.execute("DELETE FROM uploads WHERE upload_id = ANY($1::text[])", upload_ids)


async def release_copies(db: Executor, upload_ids: Sequence[str]) -> None:
    """Drop the reservations of copies that are over (refused, waiting, failed or crashed)."""
    if upload_ids:
        await db.execute("DELETE FROM uploads WHERE kind = 'copy' AND upload_id = ANY($1::text[])", list(upload_ids))


async def copy_upload_ids(db: Executor) -> list[str]:
    """The ids of every copy in progress (or left behind by a crashed worker)."""
    return [r["upload_id"] for r in await db.fetch("SELECT upload_id FROM uploads WHERE kind = 'copy'")]


async def known_upload_ids(db: Executor) -> list[str]:
    """Every upload id with a row: the staged entries a start-up sweep must keep."""
    return [r["upload_id"] for r in await db.fetch("SELECT upload_id FROM uploads")]


async def expired_uploads(db: Executor) -> list[PendingUpload]:
    """Uploads whose expiry has passed."""
    rows = await db.fetch(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE expires_at < now() ORDER BY expires_at")
    return [u for u in map(_upload, rows) if u is not None]


async def extend_upload(db: Executor, upload_id: str, expires_at: datetime) -> None:
    """Push an upload's expiry back (announced again)."""
    await db.execute("UPDATE uploads SET expires_at = $2 WHERE upload_id = $1", upload_id, expires_at)


@dataclass(frozen=True)
class WaitingAnnouncement:
    """An announcement no store had room for, as it arrived, and what it needs."""

    event_id: uuid.UUID
    event: bytes
    name: str
    size: int
    since: datetime


async def wait_for_room(
    conn: asyncpg.Connection, event_id: uuid.UUID, event: bytes, name: str, size: int, reason: str
) -> None:
    """Record an announcement as waiting for room (again: its reason and attempt are updated)."""
    await conn.execute(
        "INSERT INTO waiting_announcements (event_id, event, name, size, reason) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (event_id) DO UPDATE SET reason = EXCLUDED.reason, size = EXCLUDED.size, tried_at = now(),"
        " attempts = waiting_announcements.attempts + 1",
        event_id, event, name, size, reason,
    )


async def still_waiting(db: Executor, waits: Sequence[tuple[uuid.UUID, int, str]]) -> None:
    """Note another attempt of waiting announcements `(event id, size, reason)` that still found no room."""
    if waits:
        ids, sizes, reasons = (list(column) for column in zip(*waits, strict=True))
        await db.execute(
            "UPDATE waiting_announcements AS w SET size = s.size, reason = s.reason, tried_at = now(),"
            " attempts = w.attempts + 1 FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS s (event_id, size, reason)"
            " WHERE w.event_id = s.event_id", ids, sizes, reasons,
        )


async def take_waiting(conn: asyncpg.Connection, event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Delete these waiting announcements' rows in the caller's transaction; the ids that were still waiting."""
    if not event_ids:
        return set()
    rows = await conn.fetch(
        "DELETE FROM waiting_announcements WHERE event_id = ANY($1::uuid[]) RETURNING event_id", list(event_ids)
    )
    return {r["event_id"] for r in rows}


async def waiting_that_fit(
    db: Executor, room: int, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[WaitingAnnouncement]:
    """The oldest waiting announcements (after `after`, in arrival order) that need at most `room` bytes."""
    since, event_id = after or (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))
    rows = await db.fetch(
        "SELECT event_id, event, name, size, since FROM waiting_announcements WHERE size <= $1"
        " AND (since, event_id) > ($2, $3) ORDER BY since, event_id LIMIT $4",
        room, since, event_id, limit,
    )
    return [WaitingAnnouncement(r["event_id"], bytes(r["event"]), r["name"], r["size"], r["since"]) for r in rows]


async def waiting_totals(db: Executor) -> tuple[int, int]:
    """How many announcements wait for room and how many bytes they need."""
    row = await db.fetchrow("SELECT count(*) AS n, COALESCE(sum(size), 0)::bigint AS bytes FROM waiting_announcements")
    return int(row["n"]), int(row["bytes"])


async def dead_letter_waiting(
    conn: asyncpg.Connection, consumer: str, waiting: WaitingAnnouncement, reason: str
) -> None:
    """Set a waiting announcement aside for good (an error no retry can cure), with its reason."""
    await record_dead_letter(conn, consumer, waiting.event_id, None, reason, waiting.event)
    await conn.execute("DELETE FROM waiting_announcements WHERE event_id = $1", waiting.event_id)
