"""While PostgreSQL is down, every route answers 503 with Retry-After (or what needs no database), never a 500;
when it is back, the same requests succeed. The database stopped is the test session's private cluster."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.catalog.service import SPEC as CATALOG
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
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
