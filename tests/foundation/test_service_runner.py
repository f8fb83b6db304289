"""A service process: ready, serves metrics, projects events, stops cleanly on SIGTERM, replays identically."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import aiohttp
import asyncpg
import pytest

from shared.bus import publish_event
from tests.conftest import wait_for
from tests.foundation.support import minted
from tests.infra import free_port_block

pytestmark = pytest.mark.usefixtures("drop_schemas")


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientConnectionError:
        return 0, ""


async def test_monitor_service_lifecycle_and_replay(settings, amqp) -> None:
    base = free_port_block()
    env = {
        **os.environ, "OBSFLOW_SITE": settings.site, "OBSFLOW_DATABASE_URL": settings.database_url,
        "OBSFLOW_AMQP_URL": settings.amqp_url, "OBSFLOW_BUS__PREFIX": settings.bus.prefix,
        "OBSFLOW_HTTP_BASE_PORT": str(base), "OBSFLOW_LOG_FORMAT": "json", "OBSFLOW_DATA_DIR": str(settings.data_dir),
        "OBSFLOW_AUTH_SECRET": settings.auth_secret.get_secret_value(),  # type: ignore[union-attr]
    }
    port = base + 4  # monitor is the fifth service
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", "service", "monitor", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_for(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), timeout_s=30, poll_s=0.1)
        channel = await amqp.channel()
        exchange = await channel.get_exchange(f"{settings.bus.prefix}.events")
        for i in range(40):
            await publish_event(exchange, minted(i, site="karoo" if i < 30 else "nrao"))
        metric = 'obsflow_site_events_total{site="karoo",type="file.minted"} 30.0'
        await wait_for(lambda: _has(f"http://127.0.0.1:{port}/metrics", metric), timeout_s=30, poll_s=0.2)
        status, body = await _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body)["status"] == "alive"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    summary = [json.loads(line) for line in err.decode().splitlines() if '"service_stopped"' in line]
    assert summary and summary[0]["stream_events_applied"] == 40

    conn = await asyncpg.connect(settings.database_url)
    query = f'SELECT site, event_type, events FROM "{settings.schema_for("monitor")}".event_counts ORDER BY site'
    try:
        before = [tuple(r) for r in await conn.fetch(query)]
        replay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli.main", "replay", "monitor", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(replay.communicate(), 60)
        assert replay.returncode == 0, err.decode()
        assert "rebuilt from the start of the log (40 events applied)" in out.decode()
        assert [tuple(r) for r in await conn.fetch(query)] == before == [
            ("karoo", "file.minted", 30), ("nrao", "file.minted", 10)
        ]
    finally:
        await conn.close()
        async with amqp.channel() as channel:
            from shared.bus import Topology

            await Topology(prefix=settings.bus.prefix).delete(channel)


async def _ok(url: str) -> bool:
    return (await _get(url))[0] == 200


async def _has(url: str, text: str) -> bool:
    return text in (await _get(url))[1]
