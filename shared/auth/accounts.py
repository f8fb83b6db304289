"""Accounts in the site's `<prefix>_accounts` schema: create, authenticate with argon2id, list.

Services read the table by its qualified name on their own pool (no pool, no migration per request); the schema
is migrated once at each service's start-up (`migrate_accounts`) and by the CLI (`open_accounts`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from shared import credentials
from shared.auth.passwords import PasswordChecker
from shared.auth.roles import Principal, Role
from shared.db import apply_migrations, create_pool
from shared.db.pool import quote_schema
from shared.errors import ObsflowError
from shared.settings import Settings

MIGRATIONS = "shared.auth.migrations"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 hashes any length; a megabyte "password" is only a way to burn memory


class AccountError(ObsflowError):
    """An account request that cannot be done; the message says why."""


def valid_account_name(name: str) -> bool:
    """1-64 of letters, digits, '_', '.', '@', '-'."""
    return bool(_NAME.match(name))


class Accounts:
    """The site's accounts table, on any pool (a service's own or the CLI's), by its qualified name."""

    def __init__(self, pool: asyncpg.Pool, schema: str, checker: PasswordChecker | None = None) -> None:
        self._pool = pool
        self._table = f"{quote_schema(schema)}.accounts"
        self.checker = checker or PasswordChecker()

    async def create(self, name: str, password: str, role: Role) -> None:
        """Create an account; refuse a bad name, a short password or an existing name."""
        if not _NAME.match(name):
            raise AccountError(f"account name {name!r} must be 1-64 of letters, digits, '_', '.', '@', '-'")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise AccountError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        digest = await self.checker.hash(password)
        try:
            await self._pool.execute(
                f"INSERT INTO {self._table} (name, password_hash, role) VALUES ($1, $2, $3)", name, digest, role.label
            )
        except asyncpg.UniqueViolationError:
            raise AccountError(f"account {name!r} exists already") from None

    async def authenticate(self, name: str, password: str) -> Principal:
        """The account's principal if the password is right; AccountError (after as long a check) otherwise."""
        row = None
        if _NAME.match(name) and len(password) <= MAX_PASSWORD:
            row = await self._pool.fetchrow(
                f"SELECT password_hash, role, disabled_at FROM {self._table} WHERE name = $1", name
            )
        digest = row["password_hash"] if row is not None and row["disabled_at"] is None else None
        if not await self.checker.verify(digest, password) or row is None:
            raise AccountError("unknown account or wrong password")
        return Principal(name, Role.parse(row["role"]))

    async def list(self) -> list[asyncpg.Record]:
        """Every account's name, role and dates (never the hash)."""
        return await self._pool.fetch(f"SELECT name, role, created_at, disabled_at FROM {self._table} ORDER BY name")


@asynccontextmanager
async def open_accounts(settings: Settings) -> AsyncIterator[Accounts]:
    """The accounts of the site on a pool of their own (the CLI's), the schema migrated first."""
    schema = settings.schema_for("accounts")
    pool = await create_pool(credentials.database_url(settings, "accounts"), schema, max_size=2)
    try:
        await apply_migrations(pool, schema, [MIGRATIONS])
        yield Accounts(pool, schema)
    finally:
        await pool.close()


async def migrate_accounts(settings: Settings) -> None:
    """Create or update the accounts schema (a service's start-up: one connection, closed at once)."""
    schema = settings.schema_for("accounts")
    pool = await create_pool(settings.database_url, schema, max_size=1)
    try:
        await apply_migrations(pool, schema, [MIGRATIONS])
    finally:
        await pool.close()
