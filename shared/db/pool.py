"""One asyncpg pool per service whose connections all live in the service's schema."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator

import asyncpg

from shared.errors import ConfigurationError, DatabaseUnavailable

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.OperatorInterventionError,  # admin or crash shutdown: the server is restarting
    asyncpg.InterfaceError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)  # not OSError at large: a handler's FileNotFoundError must be set aside, not retried forever


def quote_schema(schema: str) -> str:
    """The schema name, checked and quoted for use as an SQL identifier."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(f"schema name {schema!r} must be lowercase letters, digits and '_'")
    return f'"{schema}"'


@contextlib.contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn driver-level connection failures into DatabaseUnavailable (transient, retried)."""
    try:
        yield
    except TRANSIENT_DB_ERRORS as e:
        raise DatabaseUnavailable(f"PostgreSQL unavailable: {e.__class__.__name__}: {e}") from e


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections have `search_path` set to `schema` (created if missing)."""
    quoted = quote_schema(schema)
    with translate_db_errors():
        conn = await asyncpg.connect(dsn)
        try:
            # A role of its own may not create schemas (`obsflow setup` made its own): create only what is missing.
            if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema) is None:
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
