"""The ingest schema's SQL: files, instances and uploads in progress."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from services.ingest.minting import Claim, ExistingFile

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


@dataclass(frozen=True)
class PendingUpload:
    """An upload (or copy) whose bytes are being staged."""

    upload_id: str
    kind: str
    name: str
    size: int | None
    checksum: str | None
    file_type: str
    store: str
    uploader: str
    metadata: dict[str, Any] | None
    expires_at: datetime

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
    ]
    rows = await conn.fetch(
        "INSERT INTO files (name, size, checksum, md5, file_type, is_directory, observation_id, start_jd,"
        " duration_s, origin_site, uploader, metadata) SELECT name, size, checksum, md5, file_type, is_directory,"
        " observation_id, start_jd, duration_s, origin_site, uploader, metadata::jsonb FROM unnest($1::text[],"
        " $2::bigint[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::text[], $8::float8[], $9::float8[],"
        " $10::text[], $11::text[], $12::text[]) AS new (name, size, checksum, md5, file_type, is_directory,"
        " observation_id, start_jd, duration_s, origin_site, uploader, metadata)"
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


async def file_document(db: Executor, name: str) -> dict[str, Any] | None:
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
    document = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in dict(row).items()}
    document["instances"] = [_instance_document(r["store"], r["path"], r["size"], r["verified_at"]) for r in instances]
    return document


def file_document_of(
    new: NewFile, created_at: datetime, instances: list[tuple[str, str, int, datetime]]
) -> dict[str, Any]:
    """The document `file_document` reads back for a file just minted, from what minting it knew."""
    return {
        "name": new.name, "size": new.size, "checksum": new.checksum, "md5": new.md5, "file_type": new.file_type,
        "is_directory": new.is_directory, "observation_id": new.observation_id, "start_jd": new.start_jd,
        "duration_s": new.duration_s, "origin_site": new.origin_site, "uploader": new.uploader,
        "created_at": created_at.isoformat(),
        "instances": [_instance_document(*instance) for instance in sorted(instances)],
    }


def _instance_document(store: str, path: str, size: int, verified_at: datetime) -> dict[str, Any]:
    return {"store": store, "path": path, "size": size, "verified_at": verified_at.isoformat()}


@contextlib.asynccontextmanager
async def _one_connection(db: Executor) -> AsyncIterator[asyncpg.Connection]:
    """`db` itself, or one connection of it held for several statements (one pool round trip, not one each)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def used_bytes_by_store(db: Executor) -> dict[str, int]:
    """Bytes of the verified instances on each store."""
    rows = await db.fetch("SELECT store, COALESCE(sum(size), 0)::bigint AS used FROM instances GROUP BY store")
    return {r["store"]: int(r["used"]) for r in rows}


_UPLOAD_COLUMNS = "upload_id, kind, name, size, checksum, file_type, store, uploader, metadata, expires_at"


def _upload(row: asyncpg.Record | None) -> PendingUpload | None:
    if row is None:
        return None
    values = dict(row)
    values["metadata"] = json.loads(values["metadata"]) if values["metadata"] is not None else None
    return PendingUpload(**values)


async def register_upload(db: Executor, upload: PendingUpload) -> PendingUpload:
    """Record an upload; for HTTP, an identical pending claim is returned instead (resumable announcement)."""
    conflict = (
        "ON CONFLICT (name, size, checksum) WHERE kind = 'http' DO UPDATE SET expires_at = EXCLUDED.expires_at"
        if upload.kind == "http" else "ON CONFLICT (upload_id) DO UPDATE SET expires_at = EXCLUDED.expires_at"
    )
    row = await db.fetchrow(
        f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) {conflict}"
        f" RETURNING {_UPLOAD_COLUMNS}",
        upload.upload_id, upload.kind, upload.name, upload.size, upload.checksum, upload.file_type, upload.store,
        upload.uploader, json.dumps(upload.metadata) if upload.metadata is not None else None, upload.expires_at,
    )
    registered = _upload(row)
    if registered is None:  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always returns a row
        raise RuntimeError(f"registering upload {upload.upload_id} returned no row")
    return registered


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


async def known_upload_ids(db: Executor) -> list[str]:
    """Every upload id with a row: the staged entries a start-up sweep must keep."""
    return [r["upload_id"] for r in await db.fetch("SELECT upload_id FROM uploads")]


async def expired_uploads(db: Executor) -> list[PendingUpload]:
    """Uploads whose expiry has passed."""
    rows = await db.fetch(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE expires_at < now() ORDER BY expires_at")
    return [u for u in map(_upload, rows) if u is not None]


async def extend_upload(db: Executor, upload_id: str, expires_at: datetime) -> None:
    """Push an upload's expiry back (its bytes are still arriving)."""
    await db.execute("UPDATE uploads SET expires_at = $2 WHERE upload_id = $1", upload_id, expires_at)
