"""Catalog searches run against the real PostgreSQL, on a small catalog in a schema of their own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.catalog.search import compile_search, cursor_after
from shared.db import apply_migrations, create_pool

DSN = "postgresql://postgres@127.0.0.1:5432/test"
INJECTED = "x'; DROP TABLE files; --"
T0 = datetime(2020, 9, 30, 8, 0, tzinfo=UTC)

# name, size, file_type, observation_id, start_jd, origin_site, uploader, hours after T0
FILES = [
    ("zen.2459122.30000.sum.uvh5", 1000, "uvh5", "zen.2459122.30000", 2459122.30000, "karoo", "correlator", 0),
    ("zen.2459122.30000.sum.autos.uvh5", 200, "autos", "zen.2459122.30000", 2459122.30000, "karoo", "rtp", 1),
    ("zen.2459122.30012.sum.uvh5", 1000, "uvh5", "zen.2459122.30012", 2459122.30012, "karoo", "correlator", 2),
    ("zen.2459122.30025.sum.uvh5", 1500, "uvh5", "zen.2459122.30025", 2459122.30025, "karoo", "correlator", 3),
    ("zen.2459123.30000.sum.uvh5", 2000, "uvh5", "zen.2459123.30000", 2459123.30000, "karoo", "correlator", 24),
    ("cal_2020_09.fits", 50, "calfits", None, None, "nrao", "pipeline", 30),
    (INJECTED, 1, "txt", None, None, "penn", "mallory", 31),
    ("100%_done.txt", 2, "txt", None, None, "penn", "mallory", 32),
]
# file name, site, store
INSTANCES = [
    ("zen.2459122.30000.sum.uvh5", "karoo", "main"), ("zen.2459122.30000.sum.uvh5", "nrao", "main"),
    ("zen.2459122.30000.sum.autos.uvh5", "karoo", "main"),
    ("zen.2459122.30012.sum.uvh5", "karoo", "main"), ("zen.2459122.30012.sum.uvh5", "nrao", "main"),
    ("zen.2459122.30012.sum.uvh5", "penn", "main"),
    ("zen.2459122.30025.sum.uvh5", "karoo", "main"),
    ("zen.2459123.30000.sum.uvh5", "nrao", "main"), ("zen.2459123.30000.sum.uvh5", "nrao", "tape"),
    ("cal_2020_09.fits", "nrao", "main"), ("100%_done.txt", "penn", "main"),
]
OBSERVATIONS = [
    ("zen.2459122.30000", 2459122.30000, "2459122.30000"), ("zen.2459122.30012", 2459122.30012, "2459122.30000"),
    ("zen.2459122.30025", 2459122.30025, "2459122.30000"), ("zen.2459123.30000", 2459123.30000, "2459123.30000"),
]
SESSIONS = [
    ("2459122.30000", 2459122.30000, 2459122.30025, 3, T0 + timedelta(hours=3), T0 + timedelta(hours=6)),
    ("2459123.30000", 2459123.30000, 2459123.30000, 1, T0 + timedelta(hours=24), None),
]
NIGHT_1 = [
    "zen.2459122.30000.sum.autos.uvh5", "zen.2459122.30000.sum.uvh5",
    "zen.2459122.30012.sum.uvh5", "zen.2459122.30025.sum.uvh5",
]
ALL_FILES = [*NIGHT_1, "zen.2459123.30000.sum.uvh5", "100%_done.txt", "cal_2020_09.fits", INJECTED]


async def load_catalog(conn: asyncpg.Connection) -> None:
    await conn.executemany(
        "INSERT INTO files (name, size, checksum, file_type, observation_id, start_jd, duration_s,"
        " origin_site, uploader, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [(n, size, f"xxh3-128:{i:032x}", ft, obs, jd, 16.1 if obs else None, site, who, T0 + timedelta(hours=h))
         for i, (n, size, ft, obs, jd, site, who, h) in enumerate(FILES)],
    )
    await conn.executemany(
        "INSERT INTO instances (file_name, site, store, path, verified_at) VALUES ($1, $2, $3, $4, $5)",
        [(n, site, store, f"/data/{n}", T0) for n, site, store in INSTANCES],
    )
    await conn.executemany(
        "INSERT INTO observations (observation_id, start_jd, duration_s, session_id) VALUES ($1, $2, 16.1, $3)",
        OBSERVATIONS,
    )
    await conn.executemany(
        "INSERT INTO sessions (session_id, start_jd, end_jd, n_observations, last_seen_at, closed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        SESSIONS,
    )


@pytest.fixture
async def catalog() -> AsyncIterator[asyncpg.Pool]:
    schema = f"catalog_search_{uuid.uuid4().hex[:12]}"
    pool = await create_pool(DSN, schema, max_size=2)
    try:
        await apply_migrations(pool, schema, ["services.catalog.migrations"])
        async with pool.acquire() as conn:
            await load_catalog(conn)
        yield pool
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


async def run(pool: asyncpg.Pool, target: str, query: dict[str, Any] | None, **page: Any) -> list[Any]:
    sql, params = compile_search(target, query, **page)
    return await pool.fetch(sql, *params)


async def keys(pool: asyncpg.Pool, target: str, query: dict[str, Any] | None, **page: Any) -> list[str]:
    key = {"files": "name", "observations": "observation_id", "sessions": "session_id"}[target]
    return [row[key] for row in await run(pool, target, query, **page)]


def only(*names: str) -> list[str]:
    return [n for n in ALL_FILES if n in names]


FILE_CASES = [
    ({}, ALL_FILES),
    ({"name": {"is": "cal_2020_09.fits"}}, ["cal_2020_09.fits"]),
    ({"name": {"is-not": "cal_2020_09.fits"}}, [n for n in ALL_FILES if n != "cal_2020_09.fits"]),
    ({"name": {"matches": "zen.2459122.%"}}, NIGHT_1),
    ({"name": {"matches": "zen.2459122.3001_.sum.uvh5"}}, ["zen.2459122.30012.sum.uvh5"]),
    ({"name": {"matches": "100\\%\\_done%"}}, ["100%_done.txt"]),
    ({"name": {"in": ["cal_2020_09.fits", "nothing", "100%_done.txt"]}}, only("cal_2020_09.fits", "100%_done.txt")),
    ({"size": {"=": 1000}}, only("zen.2459122.30000.sum.uvh5", "zen.2459122.30012.sum.uvh5")),
    ({"size": {"!=": 1000}}, [n for n in ALL_FILES if n not in ("zen.2459122.30000.sum.uvh5",
                                                              "zen.2459122.30012.sum.uvh5")]),
    ({"size": {">": 1000}}, only("zen.2459122.30025.sum.uvh5", "zen.2459123.30000.sum.uvh5")),
    ({"size": {">=": 1500, "<": 2000}}, only("zen.2459122.30025.sum.uvh5")),
    ({"size": {"<=": 2}}, only("100%_done.txt", INJECTED)),
    ({"size": {"between": [50, 200]}}, only("zen.2459122.30000.sum.autos.uvh5", "cal_2020_09.fits")),
    ({"size": {"between": [1e3, 1000.0]}}, only("zen.2459122.30000.sum.uvh5", "zen.2459122.30012.sum.uvh5")),
    ({"created_at": {"<": "2020-09-30T10:00:00Z"}}, only("zen.2459122.30000.sum.uvh5",
                                                        "zen.2459122.30000.sum.autos.uvh5")),
    ({"created_at": {"between": ["2020-10-01T08:00:00+00:00", "2020-10-01T14:30"]}},
     only("zen.2459123.30000.sum.uvh5", "cal_2020_09.fits")),
    ({"created_at": {">=": 2459124.0}}, only("cal_2020_09.fits", INJECTED, "100%_done.txt")),
    ({"start_jd": {"between": [2459122.3001, 2459122.31]}}, only("zen.2459122.30012.sum.uvh5",
                                                                 "zen.2459122.30025.sum.uvh5")),
    ({"start_jd": {">=": "2020-09-30T18:00:00Z"}}, only("zen.2459123.30000.sum.uvh5")),
    ({"start_jd": {"exists": False}}, only("cal_2020_09.fits", INJECTED, "100%_done.txt")),
    ({"duration_s": {">": 16}}, [*NIGHT_1, "zen.2459123.30000.sum.uvh5"]),
    ({"observation_id": {"is": "zen.2459122.30000"}}, only("zen.2459122.30000.sum.uvh5",
                                                           "zen.2459122.30000.sum.autos.uvh5")),
    ({"observation_id": {"is-not": "zen.2459122.30000"}},
     [n for n in ALL_FILES if not n.startswith("zen.2459122.30000")]),
    ({"session_id": {"is": "2459122.30000"}}, NIGHT_1),
    ({"session_id": {"in": ["2459123.30000"]}}, ["zen.2459123.30000.sum.uvh5"]),
    ({"session_id": {"is-not": "2459122.30000"}}, [n for n in ALL_FILES if n not in NIGHT_1]),
    ({"session_id": {"matches": "2459123.%"}}, ["zen.2459123.30000.sum.uvh5"]),
    ({"session_id": {"exists": False}}, only("cal_2020_09.fits", INJECTED, "100%_done.txt")),
    ({"none-of": [{"session_id": {"in": ["2459122.30000"]}}]}, [n for n in ALL_FILES if n not in NIGHT_1]),
    ({"file_type": {"is": "autos"}}, ["zen.2459122.30000.sum.autos.uvh5"]),
    ({"origin_site": {"in": ["nrao", "penn"]}}, only("cal_2020_09.fits", INJECTED, "100%_done.txt")),
    ({"uploader": {"matches": "pipe%"}}, ["cal_2020_09.fits"]),
    ({"checksum": {"is": "xxh3-128:" + "0" * 31 + "5"}}, ["cal_2020_09.fits"]),
    ({"instances": {"=": 0}}, [INJECTED]),
    ({"instances": {">=": 2}}, only("zen.2459122.30000.sum.uvh5", "zen.2459122.30012.sum.uvh5",
                                    "zen.2459123.30000.sum.uvh5")),
    ({"instances": {"between": [3, 3]}}, ["zen.2459122.30012.sum.uvh5"]),
    ({"instance-at": "penn"}, only("zen.2459122.30012.sum.uvh5", "100%_done.txt")),
    ({"no-instance-at": "karoo"}, only("zen.2459123.30000.sum.uvh5", "cal_2020_09.fits", INJECTED,
                                       "100%_done.txt")),
    ({"and": [{"name": {"matches": "zen.%"}}, {"instance-at": "nrao"}, {"no-instance-at": "karoo"}]},
     ["zen.2459123.30000.sum.uvh5"]),
    ({"and": [{"size": {">": 100}}, {"size": {"<": 1500}}, {"instance-at": "karoo"}, {"instance-at": "nrao"}]},
     only("zen.2459122.30000.sum.uvh5", "zen.2459122.30012.sum.uvh5")),
    ({"or": [{"file_type": {"is": "calfits"}}, {"and": [{"file_type": {"is": "uvh5"}}, {"instances": {">": 2}}]}]},
     only("zen.2459122.30012.sum.uvh5", "cal_2020_09.fits")),
    ({"none-of": [{"file_type": {"is": "uvh5"}}, {"origin_site": {"is": "penn"}}]},
     only("zen.2459122.30000.sum.autos.uvh5", "cal_2020_09.fits")),
    ({"none-of": [{"start_jd": {"<": 2459123}}]},
     only("zen.2459123.30000.sum.uvh5", "cal_2020_09.fits", INJECTED, "100%_done.txt")),
    ({"none-of": [{"none-of": [{"instance-at": "penn"}]}]}, only("zen.2459122.30012.sum.uvh5", "100%_done.txt")),
]


@pytest.mark.parametrize(("query", "expected"), FILE_CASES, ids=[str(q)[:60] for q, _ in FILE_CASES])
async def test_file_clauses(catalog: asyncpg.Pool, query: dict[str, Any], expected: list[str]) -> None:
    assert await keys(catalog, "files", query) == expected


async def test_file_rows_carry_their_instances(catalog: asyncpg.Pool) -> None:
    (row,) = await run(catalog, "files", {"name": {"is": "zen.2459123.30000.sum.uvh5"}})
    assert (row["size"], row["n_instances"], row["instance_sites"]) == (2000, 2, ["nrao"])


OBSERVATION_CASES = [
    ({"session_id": {"is": "2459122.30000"}}, ["zen.2459122.30000", "zen.2459122.30012", "zen.2459122.30025"]),
    ({"observation_id": {"matches": "%.30000"}}, ["zen.2459122.30000", "zen.2459123.30000"]),
    ({"start_jd": {">": 2459122.30005, "<": 2459123}}, ["zen.2459122.30012", "zen.2459122.30025"]),
    ({"files": {">=": 2}}, ["zen.2459122.30000"]),
    ({"has-file": {"instance-at": "penn"}}, ["zen.2459122.30012"]),
    ({"none-of": [{"has-file": {"instance-at": "karoo"}}]}, ["zen.2459123.30000"]),
    ({"has-file": {"and": [{"file_type": {"is": "autos"}}, {"size": {"<": 500}}]}}, ["zen.2459122.30000"]),
]


@pytest.mark.parametrize(("query", "expected"), OBSERVATION_CASES, ids=[str(q)[:60] for q, _ in OBSERVATION_CASES])
async def test_observation_clauses(catalog: asyncpg.Pool, query: dict[str, Any], expected: list[str]) -> None:
    assert await keys(catalog, "observations", query) == expected


SESSION_CASES = [
    ({"status": {"is": "closed"}}, ["2459122.30000"]),
    ({"status": {"is-not": "closed"}}, ["2459123.30000"]),
    ({"closed_at": {"exists": False}}, ["2459123.30000"]),
    ({"n_observations": {">": 1}}, ["2459122.30000"]),
    ({"end_jd": {">=": "2020-09-30T18:00:00Z"}}, ["2459123.30000"]),
    ({"last_seen_at": {"<": "2020-09-30T12:00:00Z"}}, ["2459122.30000"]),
    ({"has-observation": {"observation_id": {"is": "zen.2459122.30012"}}}, ["2459122.30000"]),
    ({"has-observation": {"has-file": {"no-instance-at": "karoo"}}}, ["2459123.30000"]),
    ({"has-file": {"instance-at": "nrao"}}, ["2459122.30000", "2459123.30000"]),
    ({"none-of": [{"has-file": {"instance-at": "penn"}}]}, ["2459123.30000"]),
]


@pytest.mark.parametrize(("query", "expected"), SESSION_CASES, ids=[str(q)[:60] for q, _ in SESSION_CASES])
async def test_session_clauses(catalog: asyncpg.Pool, query: dict[str, Any], expected: list[str]) -> None:
    assert await keys(catalog, "sessions", query) == expected


async def test_cursor_pages_walk_the_whole_result_in_order(catalog: asyncpg.Pool) -> None:
    for target, everything in (("files", ALL_FILES), ("observations", [o[0] for o in OBSERVATIONS])):
        seen: list[str] = []
        cursor = None
        key = "name" if target == "files" else "observation_id"
        while True:
            rows = await run(catalog, target, {}, limit=3, cursor=cursor)
            seen += [row[key] for row in rows]
            if len(rows) < 3:
                break
            cursor = cursor_after(target, rows[-1])
        assert seen == everything


async def test_offset_pages_and_a_filtered_cursor(catalog: asyncpg.Pool) -> None:
    assert await keys(catalog, "files", {}, limit=2, offset=3) == ALL_FILES[3:5]
    query = {"size": {"<": 1500}}
    first = await run(catalog, "files", query, limit=2)
    rest = await keys(catalog, "files", query, cursor=cursor_after("files", first[-1]))
    assert [r["name"] for r in first] + rest == await keys(catalog, "files", query)


async def test_injection_is_matched_literally_and_changes_nothing(catalog: asyncpg.Pool) -> None:
    assert await keys(catalog, "files", {"name": {"is": INJECTED}}) == [INJECTED]
    assert await keys(catalog, "files", {"name": {"in": [INJECTED, "a' OR '1'='1"]}}) == [INJECTED]
    assert await keys(catalog, "files", {"name": {"is": "a' OR '1'='1"}}) == []
    assert await keys(catalog, "files", {"uploader": {"matches": "%'; DELETE FROM files; --"}}) == []
    assert await keys(catalog, "files", {"instance-at": "nrao' OR true --"}) == []
    assert await keys(catalog, "sessions", {"session_id": {"is": "x\"; DROP TABLE sessions; --"}}) == []
    async with catalog.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM files") == len(FILES)
        assert await conn.fetchval("SELECT count(*) FROM sessions") == len(SESSIONS)
        assert await conn.fetchval("SELECT count(*) FROM instances") == len(INSTANCES)
