"""The transfer service run in-process beside a real catalog (tests/catalog's harness), on the real PostgreSQL and
RabbitMQ, with a peer declared so orders can name it; and a small JSON client of its API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from services.transfer.service import SPEC
from shared.runner import ServiceRunner
from shared.settings import PeerSettings, Settings
from tests.infra import free_port_block

PEER = "nrao"


def transfer_settings(settings: Settings, **options: Any) -> Settings:
    """The test site's settings: free ports, the peer PEER declared, these `[services.transfer]` options."""
    return settings.model_copy(update={
        "http_base_port": free_port_block(), "peers": [PeerSettings(name=PEER, http_url="http://127.0.0.1:9")],
        "services": {"catalog": {"session_sweep_interval_s": 3600}, "transfer": options},
    })


@asynccontextmanager
async def running_transfer(settings: Settings) -> AsyncIterator[ServiceRunner]:
    """The transfer service started in this process; stopped afterwards."""
    runner = ServiceRunner(SPEC, settings)
    try:
        await runner.start()
        yield runner
    finally:
        await runner.stop()


class Api:
    """A tiny JSON client of one running service, as a given bearer."""

    def __init__(self, session: aiohttp.ClientSession, base: str, bearer: str | None) -> None:
        self.session, self.base, self.bearer = session, base, bearer

    async def call(self, method: str, path: str, body: Any = None, *,
                   bearer: str | None = "") -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body, headers) of `method path` (as `bearer`, when given)."""
        bearer = self.bearer if bearer == "" else bearer
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None), dict(response.headers)
