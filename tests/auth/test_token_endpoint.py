"""POST /api/v1/tokens under attack: no new database connections, bounded argon2 work, failures rate-limited per
account and per address, and nobody else's failures hold back a login on another account."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from services.catalog.service import SPEC
from shared.auth import Role
from shared.auth.accounts import open_accounts
from shared.auth.passwords import PasswordChecker, PasswordChecksBusy
from shared.auth.secrets import load_site_secret
from shared.bus import Topology
from shared.http.errors import error_middleware
from shared.http.tokens import token_routes
from shared.ratelimit import SlidingWindow
from shared.runner import ServiceRunner
from shared.settings import Settings
from tests.infra import free_port_block

pytestmark = pytest.mark.usefixtures("drop_schemas")
PASSWORD = "a long enough password"
PER_ACCOUNT = 5


@pytest.fixture
async def catalog(settings: Settings, tmp_path: Path) -> AsyncIterator[ServiceRunner]:
    s = settings.model_copy(update={"http_base_port": free_port_block(), "data_dir": tmp_path,
                                    "login_failures_per_account": PER_ACCOUNT, "login_failures_per_address": 15})
    async with open_accounts(s) as accounts:
        for name in ("reader", "writer"):
            await accounts.create(name, PASSWORD, Role.READ_ONLY)
    runner = ServiceRunner(SPEC, s)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
        connection = await aio_pika.connect(s.amqp_url)
        async with connection, connection.channel() as channel:
            await Topology(prefix=s.bus.prefix).delete(channel)


async def _login(port: int, name: str, password: str, *, source: str) -> tuple[int, dict, str | None]:
    """POST /api/v1/tokens from the loopback address `source` (127.0.0.x: a different client address each)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
        f"http://127.0.0.1:{port}/api/v1/tokens", json={"name": name, "password": password}
    ) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def _our_connections(conn: asyncpg.Connection, site: str) -> int:
    return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
                               f"obsflow {site}\\_%")


async def test_a_burst_of_wrong_passwords_opens_no_connection_and_is_rate_limited(catalog: ServiceRunner) -> None:
    assert catalog.ctx is not None
    port, site, pool = catalog.settings.http_port("catalog"), catalog.settings.site, catalog.ctx.pool
    # Every connection the pool may ever open, opened now: the burst can only add connections of its own.
    await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.2)") for _ in range(pool.get_max_size())))
    observer = await asyncpg.connect(catalog.settings.database_url)
    try:
        before = await _our_connections(observer, site)
        peak = before
        burst = asyncio.gather(*(_login(port, "reader", f"wrong guess {i:04d}", source="127.0.0.2")
                                 for i in range(20)))
        while not burst.done():
            peak = max(peak, await _our_connections(observer, site))
            await asyncio.sleep(0.02)  # sampling interval of the observer, not a wait for a condition
        answers = await burst
    finally:
        await observer.close()
    assert before == pool.get_max_size() and peak == before
    statuses = sorted(status for status, _body, _retry in answers)
    assert statuses == [401] * PER_ACCOUNT + [429] * (20 - PER_ACCOUNT)
    refused = [(body, retry) for status, body, retry in answers if status == 429]
    assert all(body["error"]["code"] == "too_many_attempts" and int(retry) >= 1 for body, retry in refused)

    # Another client logs in to another account at once; the attacked account stays closed for the window.
    status, body, _ = await _login(port, "writer", PASSWORD, source="127.0.0.3")
    assert status == 201 and body["role"] == "read-only"
    status, _, retry = await _login(port, "reader", PASSWORD, source="127.0.0.3")
    assert status == 429 and retry is not None

    # Per address: the attacker's failures on many accounts stop at the address's limit.
    answers = [await _login(port, f"nobody{i}", "wrong guess", source="127.0.0.2") for i in range(12)]
    assert [status for status, _, _ in answers] == [401] * 10 + [429] * 2  # 5 failures already counted above
    status, _, _ = await _login(port, "writer", PASSWORD, source="127.0.0.4")
    assert status == 201


class _CountingHasher(PasswordHasher):
    """argon2id as usual, counting how many checks run at once (in their threads)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.running = self.peak = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 (argon2's own names)
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return super().verify(hash, password)
        finally:
            with self._lock:
                self.running -= 1


async def test_argon2_checks_run_at_most_one_per_slot_and_excess_waits_briefly_then_503(settings: Settings) -> None:
    hasher = _CountingHasher()
    checker = PasswordChecker(slots=2, wait_s=60, hasher=hasher)  # all wait their turn (a loaded machine)
    digest = hasher.hash(PASSWORD)
    results = await asyncio.gather(*(checker.verify(digest, PASSWORD if i % 2 else "wrong") for i in range(12)))
    assert results == [False, True] * 6 and hasher.peak == 2

    impatient = PasswordChecker(slots=1, wait_s=0.01, hasher=hasher)
    outcomes = await asyncio.gather(*(impatient.verify(digest, PASSWORD) for _ in range(4)), return_exceptions=True)
    assert outcomes.count(True) >= 1 and any(isinstance(o, PasswordChecksBusy) for o in outcomes)

    async with open_accounts(settings) as accounts:
        await accounts.create("reader", PASSWORD, Role.READ_ONLY)
        app = web.Application(middlewares=[error_middleware])
        app.router.add_routes(token_routes(settings, accounts._pool, load_site_secret(settings), impatient))
        async with TestClient(TestServer(app)) as client:
            responses = await asyncio.gather(*(client.post("/api/v1/tokens", json={"name": "reader",
                                                                                   "password": PASSWORD})
                                               for _ in range(4)))
            busy = [r for r in responses if r.status == 503]
            assert busy and all(r.headers["Retry-After"] == "1" for r in busy)
            assert (await busy[0].json())["error"]["code"] == "busy"
            assert {r.status for r in responses} <= {201, 503}
            for r in responses:
                r.release()


def test_sliding_window_counts_marks_within_the_window_only() -> None:
    now = [0.0]
    window = SlidingWindow(2, 10.0, max_keys=2, clock=lambda: now[0])
    window.mark("a")
    now[0] = 4.0
    window.mark("a")
    assert window.retry_after("a") == 6.0 and window.retry_after("b") is None
    window.unmark("a")
    assert window.retry_after("a") is None
    window.mark("a")
    now[0] = 10.5
    assert window.retry_after("a") is None  # the mark at 0 left the window
    window.mark("b")
    window.mark("c")  # a third key: the least recently marked ("a") is forgotten
    assert window.retry_after("a") is None and len(window._marks) == 2
