"""A consumer killed with SIGKILL mid-batch resumes, and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from shared.bus import StreamConsumer, publish_event
from shared.db import apply_migrations, create_pool
from tests.conftest import wait_for
from tests.foundation.support import PROJECTION_DDL, minted, project_minted, snapshot

pytestmark = pytest.mark.usefixtures("drop_schemas")


async def test_consumer_killed_before_ack_resumes_to_the_same_state(
    pool, settings, topology, amqp, bus_metrics
) -> None:
    await pool.execute(PROJECTION_DDL)
    channel = await amqp.channel()
    exchange = await channel.get_exchange(topology.events_exchange)
    for i in range(1500):
        await publish_event(exchange, minted(i))

    env = {
        **os.environ, "DSN": settings.database_url, "SCHEMA": settings.schema_for("test"),
        "AMQP_URL": settings.amqp_url, "PREFIX": topology.prefix, "DELAY_S": "0.002",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.foundation.projector_proc", env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"attached"
        await wait_for(lambda: _checkpointed(pool), timeout_s=30)  # at least one batch committed ...
        assert await pool.fetchval("SELECT count(*) FROM minted") < 1500  # ... and work still in hand
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    killed_at = await pool.fetchval("SELECT count(*) FROM minted")

    restarted = StreamConsumer("projector", pool, settings.amqp_url, topology, {"file.minted": project_minted},
                               bus_metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(restarted.run(stop))
    await restarted.drain()
    stop.set()
    await task
    assert restarted.applied == 1500 - killed_at
    interrupted = await snapshot(pool)

    # The same log projected by an uninterrupted consumer in a schema of its own.
    other = await create_pool(settings.database_url, settings.schema_for("other"))
    try:
        await apply_migrations(other, settings.schema_for("other"), ["shared.bus.migrations"])
        await other.execute(PROJECTION_DDL)
        rebuilt = StreamConsumer("projector-clean", other, settings.amqp_url, topology,
                                 {"file.minted": project_minted}, bus_metrics)
        await rebuilt.rebuild([])
        assert interrupted == await snapshot(other)
    finally:
        await other.close()
    assert len(interrupted) == 1500 and {r[3] for r in interrupted} == {1}


async def _checkpointed(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM stream_checkpoints") > 0
