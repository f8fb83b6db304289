"""One asyncpg pool per service whose connections all live in the service's schema."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import asyncpg
import structlog

from shared.errors import ConfigurationError
from shared.failures import translate_db_errors
from shared.settings import Settings

log = structlog.get_logger()

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quote_schema(schema: str) -> str:
    """The schema name, checked and quoted for use as an SQL identifier."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(f"schema name {schema!r} must be lowercase letters, digits and '_'")
    return f'"{schema}"'


# The connections a service holds for its whole life (outbox listener, stream consumer and dispatcher locks) plus a
# few to work with: a smaller pool could wait forever on itself.
MIN_POOL_SIZE = 6


@dataclass(frozen=True)
class ConnectionBudget:
    """How a site's service processes share the server's connections (docs/architecture.md, "Connections")."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionBudget:
        """db_pool_size, db_processes and db_reserved_connections."""
        return cls(settings.db_pool_size, settings.db_processes, settings.db_reserved_connections)

    pool_size: int  # wanted per service process
    processes: int  # service processes sharing the server
    reserved: int  # left for everything else: the CLI, ingest's staging locks, tests, operators

    def fit(self, max_connections: int, superuser_reserved: int) -> int:
        """The pool size that fits the server: the wanted one, smaller if needed; ConfigurationError if too small."""
        usable = max_connections - superuser_reserved - self.reserved
        share = usable // self.processes
        if share >= self.pool_size:
            return self.pool_size
        arithmetic = (f"max_connections {max_connections} - superuser_reserved_connections {superuser_reserved} - "
                      f"db_reserved_connections {self.reserved} = {usable}, shared by db_processes {self.processes}")
        if share < MIN_POOL_SIZE:
            raise ConfigurationError(
                f"PostgreSQL cannot give each service process a pool of even {MIN_POOL_SIZE} connections ({arithmetic}"
                f" = {share} each); raise the server's max_connections, or lower OBSFLOW_DB_RESERVED_CONNECTIONS "
                "or the number of replicas (OBSFLOW_DB_PROCESSES)"
            )
        log.warning("db_pool_shrunk", wanted=self.pool_size, pool_size=share, reason=arithmetic)
        return share


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10, budget: ConnectionBudget | None = None
) -> asyncpg.Pool:
    """A pool whose connections have `search_path` set to `schema` (created if missing); with a budget, its size is
    fitted to the server's max_connections (read once, here)."""
    quoted = quote_schema(schema)
    with translate_db_errors():
        conn = await asyncpg.connect(dsn)
        try:
            # A role of its own may not create schemas (`obsflow setup` made its own): create only what is missing;
            # two services racing to create the same schema find it exists, which is all they need.
            if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema) is None:
                with contextlib.suppress(asyncpg.UniqueViolationError):
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            if budget is not None:
                max_size = budget.fit(int(await conn.fetchval("SHOW max_connections")),
                                      int(await conn.fetchval("SHOW superuser_reserved_connections")))
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn, min_size=min(min_size, max_size), max_size=max_size,
            # application_name lets an operator see in pg_stat_activity which service holds which connections
            server_settings={"search_path": schema, "application_name": f"obsflow {schema}"[:63]},
        )
    assert pool is not None  # asyncpg types create_pool as Optional; it never returns None when awaited
    return pool
