"""One asyncpg pool per service whose connections all live in the service's schema."""

from __future__ import annotations

import re

import asyncpg

from shared.errors import ConfigurationError
from shared.failures import translate_db_errors

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quote_schema(schema: str) -> str:
    """The schema name, checked and quoted for use as an SQL identifier."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(f"schema name {schema!r} must be lowercase letters, digits and '_'")
    return f'"{schema}"'


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections have `search_path` set to `schema` (created if missing)."""
    quoted = quote_schema(schema)
    with translate_db_errors():
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        except asyncpg.UniqueViolationError:
            pass  # two services racing to create the same schema: it exists, which is all we need
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, server_settings={"search_path": schema}
        )
    assert pool is not None  # asyncpg types create_pool as Optional; it never returns None when awaited
    return pool
