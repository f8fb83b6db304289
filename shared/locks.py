"""PostgreSQL advisory locks: the one derivation of a lock key, and the one leader loop.

A leader holds a session advisory lock on a dedicated pooled connection; every other process (a replica, a second
start) stands by until it can take it. The lock dies with the session, so a leader whose connection is gone (a
database restart) must stop leading at once: `lost()` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import structlog

from shared.errors import ObsflowError
from shared.failures import suppress_transient
from shared.waiting import wait_any

log = structlog.get_logger()


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for `parts` (e.g. "outbox", schema): stable across processes and builds."""
    digest = hashlib.blake2b(":".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LeadershipTaken(ObsflowError):
    """Another process holds the lock (raised instead of standing by when asked not to wait)."""


class LeadershipLost(ObsflowError):
    """The session holding the lock is gone: stop leading at once, then take the lock again."""


class Leader:
    """One process at a time leads `name`, holding the advisory lock `key` on a connection of `pool`."""

    def __init__(self, pool: asyncpg.Pool, key: int, name: str) -> None:
        self._pool = pool
        self.key = key
        self.name = name
        self.standby = False  # true while another process holds the lock and this one waits for it
        self._connection: asyncpg.Connection | None = None

    @property
    def connection(self) -> asyncpg.Connection:
        """The session that holds the lock (e.g. to LISTEN on); only while leading."""
        if self._connection is None:
            raise LeadershipTaken(f"{self.name} is not leading")
        return self._connection

    def lost(self) -> bool:
        """True once the session holding the lock has ended: another process may lead now."""
        if self._connection is None:
            return False
        try:
            return self._connection.is_closed()
        except asyncpg.InterfaceError:  # the pool took the dead connection back already
            return True

    @contextlib.asynccontextmanager
    async def leading(
        self, stop: asyncio.Event, *, wait: bool = True, retry_s: float = 2.0, wakeup: asyncio.Event | None = None
    ) -> AsyncIterator[bool]:
        """Lead for the duration of the block: yields True once the lock is held, False if `stop` came first.

        While another process leads, stand by, trying again every `retry_s` (or on `wakeup`); with `wait=False`
        raise LeadershipTaken instead. The lock is released on the way out.
        """
        async with self._pool.acquire() as connection:
            try:
                while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                    if not wait:
                        raise LeadershipTaken(f"{self.name} is led by another process")
                    if not self.standby:
                        log.info("leadership_standby", leader=self.name)
                    self.standby = True
                    if await wait_any(stop, wakeup, retry_s):
                        yield False
                        return
            finally:
                self.standby = False
            self._connection = connection
            try:
                yield True
            finally:
                self._connection = None
                with suppress_transient():  # a session that is gone released the lock with it
                    await connection.execute("SELECT pg_advisory_unlock($1)", self.key)
