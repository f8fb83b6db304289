"""Catalog searches: a JSON clause tree and a page request compiled into one parameterised SQL statement.

The language is documented with examples in docs/catalog-search.md. Values only ever travel as
parameters; identifiers only come from the whitelist in search_fields. Results are in a fixed order
(start_jd, then the name or id; files without a start_jd last) so that pages never overlap.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

from services.catalog.search_clauses import ClauseCompiler, SqlParameters
from services.catalog.search_errors import SearchError
from services.catalog.search_fields import TARGETS, Target
from services.catalog.search_values import SQL_TYPE

__all__ = [
    "DEFAULT_LIMIT", "MAX_LIMIT", "MAX_OFFSET", "SearchError", "compile_search", "cursor_after", "search_targets",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_OFFSET = 2**63 - 1  # PostgreSQL's bigint


def search_targets() -> list[str]:
    """The names of what can be searched: files, observations, sessions."""
    return list(TARGETS)


def compile_search(
    target: str,
    query: Mapping[str, Any] | None,
    *,
    limit: int = DEFAULT_LIMIT,
    offset: int | None = None,
    cursor: str | None = None,
) -> tuple[str, list[object]]:
    """The SQL and parameters of one page of a search; an empty query ({}) matches everything."""
    spec = _target(target)
    _check_page(limit, offset, cursor)
    params = SqlParameters()
    conditions = []
    if query is not None and not isinstance(query, Mapping):
        raise SearchError("$", "a search is a JSON object (a clause), e.g. {\"name\": {\"matches\": \"zen.%\"}}")
    if query:
        conditions.append(ClauseCompiler(params).clause(spec, dict(query), "$"))
    if cursor is not None:
        first, second = _decode_cursor(cursor, spec)
        key_sql = ", ".join(spec.order_keys)
        first_param = params.add(first, SQL_TYPE[spec.order_kinds[0]])
        second_param = params.add(second, SQL_TYPE[spec.order_kinds[1]])
        conditions.append(f"({key_sql}) > ({first_param}, {second_param})")
    sql = f"SELECT {spec.columns} FROM {spec.from_sql}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += f" ORDER BY {', '.join(spec.order_keys)} LIMIT {params.add(limit, 'bigint')}"
    if offset:
        sql += f" OFFSET {params.add(offset, 'bigint')}"
    return sql, params.values


def cursor_after(target: str, row: Mapping[str, Any]) -> str:
    """The cursor of the page that follows row (the last row of a full page) in a search of target."""
    spec = _target(target)
    first, second = (row[column] for column in spec.cursor_columns)
    payload = [spec.name, None if first is None else float(first), str(second)]
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, spec: Target) -> tuple[float, str]:
    stale = SearchError("cursor", "not a cursor of this search; start again without a cursor")
    if not isinstance(cursor, str):
        raise stale
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise stale from e
    if not (isinstance(payload, list) and len(payload) == 3 and payload[0] == spec.name):
        raise stale
    _, first, second = payload
    if first is None:
        first = math.inf  # files without a start_jd sort last (COALESCE(start_jd, 'Infinity'))
    if isinstance(first, bool) or not isinstance(first, int | float) or not isinstance(second, str) or "\0" in second:
        raise stale
    return float(first), second


def _target(target: str) -> Target:
    spec = TARGETS.get(target) if isinstance(target, str) else None
    if spec is None:
        raise SearchError("target", f"unknown search target {target!r}; use one of {', '.join(TARGETS)}")
    return spec


def _check_page(limit: int, offset: int | None, cursor: str | None) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise SearchError("limit", f"limit is a whole number from 1 to {MAX_LIMIT}; got {limit!r}")
    whole = isinstance(offset, int) and not isinstance(offset, bool)
    if offset is not None and not (whole and 0 <= offset <= MAX_OFFSET):
        raise SearchError("offset", f"offset is a whole number from 0 to {MAX_OFFSET}; got {offset!r}")
    if offset and cursor is not None:
        raise SearchError("offset", "use either a cursor or an offset, not both (a cursor is faster)")
