"""A service stops within its grace period whatever its HTTP clients do: idle keep-alive connections, a request
whose headers trickle in, a JSON body and an upload that stop half-way."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
import xxhash

from services.ingest.service import SPEC
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.bus import Topology
from shared.client import ObsflowClient
from shared.runner import ServiceRunner
from shared.settings import Settings, StoreSettings
from tests.conftest import wait_for
from tests.infra import free_port_block

pytestmark = pytest.mark.usefixtures("drop_schemas")
GRACE_S = 3.0
MARGIN_S = 1.5


@pytest.fixture
async def ingest(settings: Settings, tmp_path: Path) -> AsyncIterator[ServiceRunner]:
    (tmp_path / "store").mkdir()
    s = settings.model_copy(update={
        "http_base_port": free_port_block(), "stores": [StoreSettings(name="main", root=tmp_path / "store")],
        "shutdown_grace_s": GRACE_S, "http_read_timeout_s": 600.0,  # only the stop may end the stalled requests
    })
    runner = ServiceRunner(SPEC, s)
    await runner.start()
    yield runner
    connection = await aio_pika.connect(s.amqp_url)
    async with connection, connection.channel() as channel:
        await Topology.from_settings(s.bus, SPEC.work_queues).delete(channel)


async def _open(port: int, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    return reader, writer


async def test_stop_finishes_within_the_grace_whatever_clients_do(ingest: ServiceRunner) -> None:
    port = ingest.settings.http_port("ingest")
    bearer = issue_token(site_secret(ingest.settings), Principal("alice", Role.READ_APPEND), 600)
    auth = f"Authorization: Bearer {bearer}\r\n".encode()
    data = os.urandom(1000)
    async with ObsflowClient(f"http://127.0.0.1:{port}", bearer) as client:
        upload = await client.announce("zen.2459122.30000.sum.uvh5", len(data),
                                       f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}", "uvh5")
    keep_alive = await _open(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await keep_alive[0].readuntil(b"alive")  # answered; the connection stays open, idle
    clients = [
        keep_alive,
        await _open(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "),  # headers that never end
        await _open(port, b"POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth
                    + b"Content-Length: 500\r\n\r\n" + b'{"name": "zen.'),  # a JSON body that stops
        await _open(port, f"PUT {upload.url} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n".encode()
                    + auth + b"\r\n" + data[:300]),  # an upload that stops
    ]
    server = ingest._http_runner.server  # type: ignore[union-attr]
    await wait_for(lambda: len(server.connections) == len(clients), timeout_s=10)
    started = time.monotonic()
    await ingest.stop()
    took = time.monotonic() - started
    assert took < GRACE_S + MARGIN_S, took
    for reader, writer in clients:  # every connection was closed by the server
        async with asyncio.timeout(5):
            while await reader.read(65536):
                pass
        writer.close()
