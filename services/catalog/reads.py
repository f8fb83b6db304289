"""What the catalog's HTTP API reads: files, instances, observations, sessions and searches, as JSON values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from services.catalog.search import DEFAULT_LIMIT, compile_search, cursor_after
from services.catalog.search_errors import SearchError
from services.catalog.search_fields import TARGETS

MAX_RECENT = 10_000
_FILES, _OBSERVATIONS, _SESSIONS = TARGETS["files"], TARGETS["observations"], TARGETS["sessions"]


class SearchTooSlow(SearchError):
    """A search that ran past the catalog's time limit."""


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A result row as JSON values: times in ISO 8601, provenance (jsonb) parsed, arrays as lists."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif key == "produced_by" and isinstance(value, str):
            value = json.loads(value)
        out[key] = value
    return out


async def file_by_name(pool: asyncpg.Pool, name: str) -> dict[str, Any] | None:
    """One file with its instance count and sites, or None."""
    row = await pool.fetchrow(f"SELECT {_FILES.columns} FROM {_FILES.from_sql} WHERE f.name = $1", name)
    return json_row(row) if row else None


async def recent_files(pool: asyncpg.Pool, count: int) -> list[dict[str, Any]]:
    """The `count` most recently minted files, newest first."""
    rows = await pool.fetch(
        f"SELECT {_FILES.columns} FROM {_FILES.from_sql} ORDER BY f.created_at DESC, f.name DESC LIMIT $1", count
    )
    return [json_row(r) for r in rows]


async def instances_of(pool: asyncpg.Pool, name: str, local_site: str) -> list[dict[str, Any]]:
    """Every known copy of a file, at this site and others; `local` marks this site's."""
    rows = await pool.fetch(
        "SELECT site, store, path, verified_at, site = $2 AS local FROM instances WHERE file_name = $1"
        " ORDER BY site <> $2, site, store, path",
        name, local_site,
    )
    return [json_row(r) for r in rows]


async def observation_by_id(pool: asyncpg.Pool, observation_id: str) -> dict[str, Any] | None:
    """One observation with the names of its files, or None."""
    row = await pool.fetchrow(
        f"SELECT {_OBSERVATIONS.columns} FROM {_OBSERVATIONS.from_sql} WHERE o.observation_id = $1", observation_id
    )
    if row is None:
        return None
    names = await pool.fetch("SELECT name FROM files WHERE observation_id = $1 ORDER BY name", observation_id)
    return {**json_row(row), "files": [r["name"] for r in names]}


async def list_sessions(pool: asyncpg.Pool, status: str | None, limit: int) -> list[dict[str, Any]]:
    """The latest sessions (by start), newest first; `status` 'open' or 'closed' filters."""
    condition = {"open": "s.closed_at IS NULL", "closed": "s.closed_at IS NOT NULL"}.get(status or "", "true")
    rows = await pool.fetch(
        f"SELECT {_SESSIONS.columns} FROM {_SESSIONS.from_sql} WHERE {condition}"
        " ORDER BY s.start_jd DESC, s.session_id DESC LIMIT $1",
        limit,
    )
    return [json_row(r) for r in rows]


async def session_by_id(pool: asyncpg.Pool, session_id: str) -> dict[str, Any] | None:
    """One session with its number of files, or None."""
    row = await pool.fetchrow(
        f"SELECT {_SESSIONS.columns},"
        " (SELECT count(*) FROM observations o JOIN files f USING (observation_id) WHERE o.session_id = s.session_id)"
        f" AS n_files FROM {_SESSIONS.from_sql} WHERE s.session_id = $1",
        session_id,
    )
    return json_row(row) if row else None


async def run_search(pool: asyncpg.Pool, request: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """One page of a search request {target, query, limit, cursor|offset}: {results, next_cursor}."""
    target = request.get("target", "files")
    limit = request.get("limit", DEFAULT_LIMIT)
    sql, params = compile_search(
        target, request.get("query"), limit=limit, offset=request.get("offset"), cursor=request.get("cursor")
    )
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
        try:
            rows = await conn.fetch(sql, *params)
        except asyncpg.QueryCanceledError as e:
            raise SearchTooSlow("$", f"the search ran longer than {timeout_s:g} s; narrow it (a name prefix,"
                                     " a time window) or ask for a smaller page") from e
    next_cursor = cursor_after(target, rows[-1]) if rows and len(rows) == limit else None
    return {"results": [json_row(r) for r in rows], "next_cursor": next_cursor}
