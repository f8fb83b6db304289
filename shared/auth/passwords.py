"""argon2id password hashing and checking, off the event loop and at most a few at a time.

Each check costs ~50 ms of CPU and 64 MiB of memory (argon2-cffi's defaults): unbounded, a burst of login
attempts would take every core and the memory with it. Checks run in threads, at most one per core; a request
that finds every slot busy for `wait_s` is refused (PasswordChecksBusy) rather than queued without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared.errors import ObsflowError


class PasswordChecksBusy(ObsflowError):
    """Every password-check slot stayed busy; the caller should retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the server is busy checking other passwords; try again in a moment")
        self.retry_after_s = retry_after_s


def cpu_slots() -> int:
    """The cores this process may run on (one password check per core at a time)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class PasswordChecker:
    """Hashes and verifies passwords with argon2id, `slots` at a time, in threads."""

    def __init__(self, slots: int | None = None, *, wait_s: float = 2.0, hasher: PasswordHasher | None = None) -> None:
        self.slots = slots or cpu_slots()
        self._wait_s = wait_s
        self._hasher = hasher or PasswordHasher()
        self._semaphore = asyncio.Semaphore(self.slots)
        # An unknown account is checked against this, so it takes as long to refuse as a wrong password.
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        """The argon2id hash of `password`."""
        async with self._slot():
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, digest: str | None, password: str) -> bool:
        """True if `password` matches `digest`; False otherwise, also for no digest (after as long a check)."""
        async with self._slot():
            if digest is None:
                if self._decoy is None:
                    self._decoy = await asyncio.to_thread(self._hasher.hash, os.urandom(16).hex())
                digest = self._decoy
                password = f"\0{password}"  # never the decoy's password
            try:
                return await asyncio.to_thread(self._hasher.verify, digest, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._wait_s):
                await self._semaphore.acquire()
        except TimeoutError:
            raise PasswordChecksBusy(retry_after_s=1.0) from None
        try:
            yield
        finally:
            self._semaphore.release()
