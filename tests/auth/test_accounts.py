"""Accounts, tokens and roles: argon2id once per token, cheap checks per request, clear refusals."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.auth import Principal, Role, TokenError, issue_token, verify_token
from shared.auth.accounts import AccountError, open_accounts
from shared.auth.secrets import load_site_secret
from shared.http.auth import AUTH_SECRET, auth_middleware, requires
from shared.http.errors import error_middleware
from shared.http.tokens import token_routes

pytestmark = pytest.mark.usefixtures("drop_schemas")
SECRET = "unit-test-secret-of-more-than-32-bytes"


def test_token_round_trip_forgery_and_expiry() -> None:
    token = issue_token(SECRET, Principal("alice", Role.READ_APPEND), ttl_s=60, now=1000)
    assert verify_token(SECRET, token, now=1030) == Principal("alice", Role.READ_APPEND)
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, token, now=1061)
    with pytest.raises(TokenError, match="signed with another secret") as other:
        verify_token("another-site-secret-of-32-bytes-at-least", token, now=1030, source="the file /x/site-secret")
    assert "forged" not in str(other.value) and "another data directory" in str(other.value)
    assert "the file /x/site-secret" in str(other.value) and SECRET not in str(other.value)
    head, payload, signature = token.split(".")
    forged = issue_token(SECRET, Principal("alice", Role.ADMIN), ttl_s=60, now=1000).split(".")[1]
    with pytest.raises(TokenError, match="altered after it was issued"):
        verify_token(SECRET, f"{head}.{forged}.{signature}", now=1030)
    for garbage in (f"{head}.{payload}.sïgnature", f"{head}.pâyload.{signature}", f"{head}.{'W' * 5000}.x",
                    f"{head}.{_b64(b'[' * 5000)}.x", f"{head}.{_b64(b'[1]')}.x", f"{head}..", "obsflow.\udcff.x"):
        with pytest.raises(TokenError):  # never a TypeError, RecursionError or ValueError: a 401, not a 500
            verify_token(SECRET, garbage, now=1030)
    with pytest.raises(TokenError, match="not an obsflow token"):
        verify_token(SECRET, "Basic abc", now=1030)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_token_check_is_cheap() -> None:
    token = issue_token(SECRET, Principal("alice", Role.READ_ONLY), ttl_s=60)
    started = time.perf_counter()
    for _ in range(10_000):
        verify_token(SECRET, token)
    assert (time.perf_counter() - started) / 10_000 < 0.001  # argon2id would be ~50 ms per call


async def test_accounts_hash_passwords_and_refuse_bad_input(settings) -> None:
    async with open_accounts(settings) as accounts:
        await accounts.create("alice", "correct horse battery", Role.READ_APPEND)
        stored = await accounts._pool.fetchval("SELECT password_hash FROM accounts WHERE name = 'alice'")
        assert stored.startswith("$argon2id$") and "correct horse" not in stored
        assert await accounts.authenticate("alice", "correct horse battery") == Principal("alice", Role.READ_APPEND)
        with pytest.raises(AccountError, match="unknown account or wrong password"):
            await accounts.authenticate("alice", "wrong password here")
        with pytest.raises(AccountError, match="unknown account or wrong password"):
            await accounts.authenticate("bob", "correct horse battery")
        with pytest.raises(AccountError, match="exists already"):
            await accounts.create("alice", "another long password", Role.ADMIN)
        with pytest.raises(AccountError, match="12 to 1024 characters"):
            await accounts.create("carol", "short", Role.ADMIN)
        with pytest.raises(AccountError, match="must be 1-64 of letters"):
            await accounts.create("../root", "a long enough password", Role.ADMIN)


async def _app(settings, pool) -> TestClient:  # type: ignore[type-arg]
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[AUTH_SECRET] = secret = load_site_secret(settings)

    @requires(Role.READ_ONLY)
    async def read(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    @requires(Role.ADMIN)
    async def admin(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("database password is hunter2")

    app.router.add_routes([web.get("/read", read), web.get("/admin", admin), web.get("/broken", broken),
                           *token_routes(settings, pool, secret)])
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_endpoints_enforce_minimum_roles_and_never_leak_internals(settings) -> None:
    async with open_accounts(settings) as accounts:
        await accounts.create("reader", "a long enough password", Role.READ_ONLY)
        client = await _app(settings, accounts._pool)
        try:
            await _check_roles_and_errors(client, settings)
        finally:
            await client.close()


async def _check_roles_and_errors(client: TestClient, settings) -> None:  # type: ignore[type-arg]
    refused = await client.post("/api/v1/tokens", json={"name": "reader", "password": "wrong wrong wrong"})
    assert refused.status == 401
    response = await client.post("/api/v1/tokens", json={"name": "reader", "password": "a long enough password"})
    assert response.status == 201
    token = (await response.json())["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/read", headers=auth)).status == 200
    forbidden = await client.get("/admin", headers=auth)
    assert forbidden.status == 403
    assert "reader has role read-only; this endpoint needs admin" in (await forbidden.json())["error"]["message"]
    assert (await client.get("/read")).status == 401
    assert (await client.get("/read", headers={"Authorization": "Bearer obsflow.x.y"})).status == 401
    callback = issue_token(settings.auth_secret.get_secret_value(), Principal("peer", Role.CALLBACK_ONLY), 60)
    assert (await client.get("/read", headers={"Authorization": f"Bearer {callback}"})).status == 403
    broken = await client.get("/broken", headers=auth)
    assert broken.status == 500
    assert "hunter2" not in await broken.text() and "Traceback" not in await broken.text()


async def test_cli_creates_the_first_admin_and_prints_a_token(settings) -> None:
    env = {**os.environ, "OBSFLOW_SITE": settings.site, "OBSFLOW_DATABASE_URL": settings.database_url,
           "OBSFLOW_AUTH_SECRET": settings.auth_secret.get_secret_value()}

    async def obsflow(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli.main", *args, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, _ = await obsflow("accounts", "create", "root", "--role", "admin", "--password-stdin",
                                 stdin=b"a long enough password\n")
    assert code == 0 and "account root created with role admin" in out
    code, out, _ = await obsflow("accounts", "token", "root", "--password-stdin", stdin=b"a long enough password\n")
    assert code == 0
    assert verify_token(settings.auth_secret.get_secret_value(), out.strip()) == Principal("root", Role.ADMIN)
    code, _, err = await obsflow("accounts", "token", "root", "--password-stdin", stdin=b"wrong\n")
    assert code == 2 and err.strip() == "obsflow: unknown account or wrong password"
