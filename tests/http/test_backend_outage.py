"""While PostgreSQL is down, every route answers 503 with Retry-After (or what needs no database), never a 500;
when it is back, the same requests succeed. The database stopped is the test session's private cluster."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.catalog.service import SPEC as CATALOG
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.http.errors import error_middleware
from shared.runner import ServiceRunner
from shared.settings import Settings
from tests.conftest import wait_for
from tests.infra import free_port_block
from tests.private_servers import PrivatePostgres

pytestmark = [pytest.mark.usefixtures("drop_schemas"), pytest.mark.timeout(240)]


@pytest.fixture
async def catalog(settings: Settings, private_postgres: PrivatePostgres, amqp) -> AsyncIterator[ServiceRunner]:
    s = settings.model_copy(update={"database_url": private_postgres.database_url, "http_base_port": free_port_block()})
    runner = ServiceRunner(CATALOG, s)
    ctx = await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
        async with amqp.channel() as channel:
            await ctx.topology.delete(channel)


def _get_paths(runner: ServiceRunner) -> list[str]:
    """Every GET route of the running service, its path parameters filled with a plausible value."""
    app = runner.http_app
    assert app is not None
    paths = {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}
    return sorted(re.sub(r"\{[^}]+\}", "zen.2459122.30000.sum.uvh5", p) for p in paths)


async def test_every_route_answers_503_not_500_while_the_database_is_down(
    catalog: ServiceRunner, private_postgres: PrivatePostgres
) -> None:
    base = f"http://127.0.0.1:{catalog.settings.http_port('catalog')}"
    token = issue_token(site_secret(catalog.settings), Principal("ada", Role.ADMIN), 600)
    paths = _get_paths(catalog)
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) as http:
        async def statuses() -> dict[str, tuple[int, str | None]]:
            answers = {}
            for path in paths:
                async with http.get(path) as response:
                    answers[path] = (response.status, response.headers.get("Retry-After"))
            return answers

        async def as_before() -> bool:
            return await statuses() == before

        before = await statuses()
        assert before["/api/v1/files"][0] == 200, before
        await asyncio.to_thread(private_postgres.stop)
        try:
            during = await statuses()
        finally:
            await asyncio.to_thread(private_postgres.start)
        assert not [p for p, (status, _) in during.items() if status >= 500 and status != 503], during
        assert during["/api/v1/files"] == (503, "5"), during
        assert during["/readyz"][0] == 503 and during["/healthz"][0] == 200, during
        await wait_for(as_before, timeout_s=60)


async def test_a_server_behind_resetting_the_connection_is_a_503_not_the_clients_fault() -> None:
    # Found by `make chaos`: PostgreSQL shutting down while an upload's handler connected to it reset that connection;
    # the ConnectionResetError was taken for the client's and answered 400 client_gone (which no client retries).
    async def reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                             struct.pack("ii", 1, 0))
        writer.transport.abort()  # an RST, as from a server going down

    backend = await asyncio.start_server(reset_at_once, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]

    async def handler(_request: web.Request) -> web.Response:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await reader.read(1)  # the backend's reset: ConnectionResetError
            writer.write(b"x" * 65536)
            await writer.drain()
            await reader.read(1)
        finally:
            writer.close()
        raise AssertionError("the backend did not reset the connection")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/needs-a-backend", handler)
    async with backend, TestClient(TestServer(app)) as client:
        response = await client.get("/needs-a-backend")
        assert response.status == 503, await response.text()
        assert response.headers["Retry-After"] == "5"
        assert (await response.json())["error"]["code"] == "unavailable"
