"""Ingest killed with SIGKILL mid-copy and restarted: the file is minted exactly once, nothing stays staged or
reserved."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import xxhash

from services.ingest.service import SPEC
from shared.bus import Topology
from tests.conftest import wait_for
from tests.ingest.service_support import announce, announcement, free_port_block, incoming_beside, staged_entries

pytestmark = pytest.mark.usefixtures("drop_schemas")
MiB = 1024 * 1024
NAME = "zen.2459122.30000.sum.uvh5"


def _write_large(path: Path, size: int) -> str:
    """Write `size` bytes of incompressible data once; return their checksum."""
    block = bytearray(os.urandom(MiB))
    digest = xxhash.xxh3_128()
    with path.open("wb") as f:
        for i in range(size // MiB):
            block[:8] = i.to_bytes(8, "little")
            f.write(block)
            digest.update(block)
    return f"xxh3-128:{digest.hexdigest()}"


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", "service", "ingest", env=env, stderr=asyncio.subprocess.DEVNULL
    )


async def _ready(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
            return r.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def test_sigkill_mid_copy_then_restart_mints_exactly_once(settings, amqp, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    source = incoming_beside(store) / "correlator" / NAME  # beneath the default source root
    source.parent.mkdir()
    checksum = await asyncio.to_thread(_write_large, source, 200 * MiB)
    base = free_port_block()
    env = {
        **os.environ, "OBSFLOW_SITE": settings.site, "OBSFLOW_DATABASE_URL": settings.database_url,
        "OBSFLOW_AMQP_URL": settings.amqp_url, "OBSFLOW_BUS__PREFIX": settings.bus.prefix,
        "OBSFLOW_HTTP_BASE_PORT": str(base), "OBSFLOW_LOG_FORMAT": "json",
        "OBSFLOW_AUTH_SECRET": settings.auth_secret.get_secret_value(), "OBSFLOW_DATA_DIR": str(tmp_path / "var"),
        # Room for the file once: the killed copy's reservation must not count twice after the restart.
        "OBSFLOW_STORES": json.dumps([{"name": "main", "root": str(store), "capacity_bytes": 300 * MiB}]),
    }
    port = base  # ingest is the first service
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.schema_for("ingest")})
    proc = await _start(env)
    try:
        await wait_for(lambda: _ready(port), timeout_s=30, poll_s=0.1)
        await announce(amqp, settings, announcement(source, site=settings.site, expected_checksum=checksum))
        await wait_for(lambda: bool(staged_entries(store)), timeout_s=30, poll_s=0.002)
        proc.kill()  # SIGKILL: no clean-up of any kind
        await proc.wait()
        assert staged_entries(store), "the copy should have been in progress when the service was killed"
        assert await conn.fetchval("SELECT count(*) FROM files") == 0
        assert await conn.fetchval("SELECT sum(size) FROM uploads WHERE kind = 'copy'") == 200 * MiB  # reserved
        (store / "staging" / "loc-0123456789abcdef").write_bytes(b"an older crash's leftover")

        proc = await _start(env)
        await wait_for(lambda: _minted(conn), timeout_s=60, poll_s=0.1)
        await wait_for(lambda: not staged_entries(store), timeout_s=10)
        assert await conn.fetchval("SELECT count(*) FROM files") == 1
        assert await conn.fetchval("SELECT count(*) FROM instances") == 1
        assert await conn.fetchval("SELECT checksum FROM files") == checksum
        assert await conn.fetchval("SELECT count(*) FROM uploads") == 0  # no reservation outlives its copy
        assert await conn.fetchval("SELECT used_bytes FROM store_usage WHERE store = 'main'") == 200 * MiB
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'file.minted'") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'instance.created'") == 1
        assert (store / "main" / NAME).stat().st_size == 200 * MiB
        assert [p.name for p in (store / "main").iterdir()] == [NAME]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        await conn.close()
        async with amqp.channel() as channel:
            await Topology.from_settings(settings.bus, SPEC.work_queues).delete(channel)
    assert proc.returncode == 0


async def _minted(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM files"))
