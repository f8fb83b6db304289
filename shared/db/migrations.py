"""Ordered SQL migrations per schema: shared bus tables first, then the service's own files."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from shared.errors import ConfigurationError
from shared.locks import lock_key

log = structlog.get_logger()


@dataclass(frozen=True)
class Migration:
    """One SQL file: its source package, its number and name, and its text."""

    source: str
    version: int
    name: str
    sql: str


def discover(package: str) -> list[Migration]:
    """The migration files `NNN_name.sql` found in `package`, in order."""
    found = []
    for entry in resources.files(package).iterdir():
        stem, dot, ext = entry.name.partition(".")
        if ext != "sql" or not dot:
            continue
        number, _, name = stem.partition("_")
        if not number.isdigit():
            raise ConfigurationError(f"migration {package}/{entry.name} must be named NNN_name.sql")
        found.append(Migration(package, int(number), name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError(f"two migrations share a number in {package}")
    return found


async def apply_migrations(pool: asyncpg.Pool, schema: str, packages: list[str]) -> list[str]:
    """Apply, in order and once each, the migrations of `packages` to `schema`; return what was applied."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        # One migrator per schema at a time: two replicas starting together must not race.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("migrate", schema))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " source text NOT NULL, version int NOT NULL, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, version))"
        )
        done = {(r["source"], r["version"]) for r in await conn.fetch("SELECT source, version FROM schema_migrations")}
        for package in packages:
            for m in discover(package):
                if (m.source, m.version) in done:
                    continue
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (source, version, name) VALUES ($1, $2, $3)",
                    m.source, m.version, m.name,
                )
                applied.append(f"{m.source}:{m.version:03d}_{m.name}")
    if applied:
        log.info("migrations_applied", schema=schema, migrations=applied)
    return applied
