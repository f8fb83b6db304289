"""What the catalog's HTTP API reads: files, instances, observations, sessions and searches, as the API's models."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from pydantic import TypeAdapter

from services.catalog.search import DEFAULT_LIMIT, compile_search, cursor_after
from services.catalog.search_errors import SearchError
from services.catalog.search_fields import TARGETS
from shared.api.catalog import (
    SEARCH_PAGES,
    CatalogFile,
    Instance,
    Observation,
    SearchPage,
    Session,
    SessionSummary,
)

MAX_RECENT = 10_000
_FILES, _OBSERVATIONS, _SESSIONS = TARGETS["files"], TARGETS["observations"], TARGETS["sessions"]


class SearchTooSlow(SearchError):
    """A search that ran past the catalog's time limit."""


_FILE_LIST = TypeAdapter(list[CatalogFile])
_INSTANCE_LIST = TypeAdapter(list[Instance])
_SESSION_LIST = TypeAdapter(list[SessionSummary])


def row_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """A result row's values for its model: provenance (jsonb, text from the driver) parsed."""
    values = dict(row)
    if isinstance(values.get("produced_by"), str):
        values["produced_by"] = json.loads(values["produced_by"])
    return values


async def file_by_name(pool: asyncpg.Pool, name: str) -> CatalogFile | None:
    """One file with its instance count and sites, or None."""
    row = await pool.fetchrow(f"SELECT {_FILES.columns} FROM {_FILES.from_sql} WHERE f.name = $1", name)
    return CatalogFile.model_validate(row_values(row)) if row else None


async def recent_files(pool: asyncpg.Pool, count: int) -> list[CatalogFile]:
    """The `count` most recently minted files, newest first."""
    rows = await pool.fetch(
        f"SELECT {_FILES.columns} FROM {_FILES.from_sql} ORDER BY f.created_at DESC, f.name DESC LIMIT $1", count
    )
    return _FILE_LIST.validate_python([row_values(r) for r in rows])


async def instances_of(pool: asyncpg.Pool, name: str, local_site: str) -> list[Instance]:
    """Every known copy of a file, at this site and others; `local` marks this site's."""
    rows = await pool.fetch(
        "SELECT site, store, path, verified_at, site = $2 AS local FROM instances WHERE file_name = $1"
        " ORDER BY site <> $2, site, store, path",
        name, local_site,
    )
    return _INSTANCE_LIST.validate_python([dict(r) for r in rows])


async def observation_by_id(pool: asyncpg.Pool, observation_id: str) -> Observation | None:
    """One observation with the names of its files, or None."""
    row = await pool.fetchrow(
        f"SELECT {_OBSERVATIONS.columns} FROM {_OBSERVATIONS.from_sql} WHERE o.observation_id = $1", observation_id
    )
    if row is None:
        return None
    names = await pool.fetch("SELECT name FROM files WHERE observation_id = $1 ORDER BY name", observation_id)
    return Observation.model_validate({**dict(row), "files": [r["name"] for r in names]})


async def list_sessions(pool: asyncpg.Pool, status: str | None, limit: int) -> list[SessionSummary]:
    """The latest sessions (by start), newest first; `status` 'open' or 'closed' filters."""
    condition = {"open": "s.closed_at IS NULL", "closed": "s.closed_at IS NOT NULL"}.get(status or "", "true")
    rows = await pool.fetch(
        f"SELECT {_SESSIONS.columns} FROM {_SESSIONS.from_sql} WHERE {condition}"
        " ORDER BY s.start_jd DESC, s.session_id DESC LIMIT $1",
        limit,
    )
    return _SESSION_LIST.validate_python([dict(r) for r in rows])


async def session_by_id(pool: asyncpg.Pool, session_id: str) -> Session | None:
    """One session with its number of files, or None."""
    row = await pool.fetchrow(
        f"SELECT {_SESSIONS.columns},"
        " (SELECT count(*) FROM observations o JOIN files f USING (observation_id) WHERE o.session_id = s.session_id)"
        f" AS n_files FROM {_SESSIONS.from_sql} WHERE s.session_id = $1",
        session_id,
    )
    return Session.model_validate(dict(row)) if row else None


async def run_search(pool: asyncpg.Pool, request: Mapping[str, Any], timeout_s: float) -> SearchPage[Any]:
    """One page of a search request {target, query, limit, cursor|offset}: a SearchPage of the target's rows."""
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
    return SEARCH_PAGES[target].model_validate({"results": [row_values(r) for r in rows], "next_cursor": next_cursor})
