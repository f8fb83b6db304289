"""Accounts in the site's `<prefix>_accounts` schema: create, authenticate with argon2id, list."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError, VerifyMismatchError

from shared import credentials
from shared.auth.roles import Principal, Role
from shared.db import apply_migrations, create_pool
from shared.errors import ObsflowError
from shared.settings import Settings

MIGRATIONS = "shared.auth.migrations"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 12


class AccountError(ObsflowError):
    """An account request that cannot be done; the message says why."""


@asynccontextmanager
async def accounts_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the accounts schema, migrated."""
    schema = settings.schema_for("accounts")
    pool = await create_pool(credentials.database_url(settings, "accounts"), schema, max_size=2)
    try:
        await apply_migrations(pool, schema, [MIGRATIONS])
        yield pool
    finally:
        await pool.close()


async def create_account(pool: asyncpg.Pool, name: str, password: str, role: Role) -> None:
    """Create an account; refuse a bad name, a short password or an existing name."""
    if not _NAME.match(name):
        raise AccountError(f"account name {name!r} must be 1-64 of letters, digits, '_', '.', '@', '-'")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password must have at least {MIN_PASSWORD} characters")
    digest = await asyncio.to_thread(PasswordHasher().hash, password)
    try:
        await pool.execute(
            "INSERT INTO accounts (name, password_hash, role) VALUES ($1, $2, $3)", name, digest, role.label
        )
    except asyncpg.UniqueViolationError:
        raise AccountError(f"account {name!r} exists already") from None


async def authenticate(pool: asyncpg.Pool, name: str, password: str) -> Principal:
    """The account's principal if the password is right (argon2id, in a thread); AccountError otherwise."""
    row = await pool.fetchrow("SELECT password_hash, role, disabled_at FROM accounts WHERE name = $1", name)
    refused = AccountError("unknown account or wrong password")
    if row is None or row["disabled_at"] is not None:
        raise refused
    try:
        await asyncio.to_thread(PasswordHasher().verify, row["password_hash"], password)
    except (VerifyMismatchError, VerificationError):
        raise refused from None
    return Principal(name, Role.parse(row["role"]))


async def list_accounts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every account's name, role and dates (never the hash)."""
    return await pool.fetch("SELECT name, role, created_at, disabled_at FROM accounts ORDER BY name")
