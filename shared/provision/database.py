"""Each principal's PostgreSQL role, owning its schema and nothing else (run with an administrator's URL)."""

from __future__ import annotations

import asyncpg
import structlog
from yarl import URL

from shared.db.pool import quote_schema

log = structlog.get_logger()


async def ensure_role_and_schema(conn: asyncpg.Connection, role: str, password: str) -> None:
    """A login role without special powers, owning the schema of the same name and every object in it."""
    quoted = quote_schema(role)  # the role and its schema share one checked name
    literal = await conn.fetchval("SELECT quote_literal($1)", password)
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role) is None:
        await conn.execute(f"CREATE ROLE {quoted} LOGIN")
    await conn.execute(
        f"ALTER ROLE {quoted} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        f" PASSWORD {literal}"
    )
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {quoted}')
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted} AUTHORIZATION {quoted}")
    await conn.execute(f"ALTER SCHEMA {quoted} OWNER TO {quoted}")
    # A schema that services created before they had roles of their own: hand its objects over.
    owned_by_others = await conn.fetch(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND pg_get_userbyid(c.relowner) <> $1",
        role,
    )
    for row in owned_by_others:
        kind = {"S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW"}.get(row["relkind"], "TABLE")
        await conn.execute(f'ALTER {kind} {quoted}."{row["relname"]}" OWNER TO {quoted}')


async def grant_reading(conn: asyncpg.Connection, owner: str, readers: list[str], tables: list[str]) -> None:
    """Let `readers` read (only) `tables` of the schema `owner` owns."""
    schema = quote_schema(owner)
    for reader in readers:
        quoted = quote_schema(reader)
        await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {quoted}")
        for table in tables:
            await conn.execute(f'GRANT SELECT ON {schema}."{table}" TO {quoted}')


def admin_url_for(database_url: str, admin_user: str = "postgres") -> str:
    """The administrator's URL on the same server and database as `database_url`."""
    return str(URL(database_url).with_user(admin_user).with_password(None))
