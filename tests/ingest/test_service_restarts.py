"""An announced ingest rides through a broker restart and then a database restart (issue 8, item 16).

What was seen: after RabbitMQ restarted (13 s) and then PostgreSQL (2.5 s), the ingest service ran on and answered
/readyz 200 with no consumer on `ingest.announced` (its consumer lived on a channel of the shared robust connection,
from a queue object the channel did not know to restore), and `obsflow simulate correlator` died with a traceback.
Both servers here are private to the test session (`tests/private_servers.py`): the machine's own are never touched.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from shared.runner import ServiceRunner
from shared.settings import Settings
from tests.conftest import wait_for
from tests.ingest.service_support import ingest_settings, outbox_events, running_ingest
from tests.private_servers import PrivatePostgres, PrivateRabbitMQ

pytestmark = pytest.mark.usefixtures("drop_schemas")

ANNOUNCEMENTS = 160  # 8 s at the 20 files/s, stretched by the restarts


@pytest.fixture
def settings(settings: Settings, private_rabbitmq: PrivateRabbitMQ, private_postgres: PrivatePostgres) -> Settings:
    """The test site on servers this test may restart."""
    return settings.model_copy(update={"amqp_url": private_rabbitmq.amqp_url,
                                       "database_url": private_postgres.database_url})


class Readiness:
    """Polls /readyz in the background and keeps every answer with its time (0: no answer)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                try:
                    async with session.get(self.url) as response:
                        self.answers.append((time.monotonic(), response.status))
                except (aiohttp.ClientError, TimeoutError):
                    self.answers.append((time.monotonic(), 0))
                await asyncio.sleep(0.1)  # a probe's period, not a wait for a condition

    def __enter__(self) -> Readiness:
        self._task = asyncio.create_task(self._poll())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def last(self) -> int:
        return self.answers[-1][1] if self.answers else 0

    def between(self, start: float, end: float) -> list[int]:
        return [status for at, status in self.answers if start <= at <= end]


async def _minted(runner: ServiceRunner) -> int:
    assert runner.ctx is not None
    try:
        return int(await runner.ctx.pool.fetchval("SELECT count(*) FROM files"))
    except Exception:  # the database is restarting: ask again on the next poll
        return -1


async def _simulate(settings: Settings, raw: Path, count: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "OBSFLOW_SITE": settings.site, "OBSFLOW_AMQP_URL": settings.amqp_url,
           "OBSFLOW_BUS__PREFIX": settings.bus.prefix, "OBSFLOW_LOG_FORMAT": "json"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", "simulate", "correlator", "--dir", str(raw), "--rate", "20",
        "--size", "4KiB", "--count", str(count), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_announced_ingest_rides_through_a_broker_restart_then_a_database_restart(
    settings, tmp_path: Path, private_rabbitmq: PrivateRabbitMQ, private_postgres: PrivatePostgres
) -> None:
    raw = tmp_path / "raw"
    s = ingest_settings(settings, tmp_path / "store", source_roots=[str(raw)])
    async with running_ingest(s) as ingest:
        consumer = ingest.parts.work_consumers[0]
        with Readiness(f"http://{s.http_host}:{s.http_port('ingest')}/readyz") as readiness:
            await wait_for(lambda: readiness.last() == 200, timeout_s=30)
            correlator = await _simulate(settings, raw, ANNOUNCEMENTS)
            output = asyncio.create_task(correlator.communicate())

            await wait_for(lambda: _at_least(ingest, 30), timeout_s=60)
            await asyncio.to_thread(private_rabbitmq.stop)
            await wait_for(lambda: readiness.last() == 503, timeout_s=10)
            broker_down = time.monotonic()
            assert not consumer.attached
            await asyncio.sleep(3.0)  # the outage lasts (the lasted 13 s)
            await asyncio.to_thread(private_rabbitmq.start)
            broker_up = time.monotonic()
            await wait_for(lambda: consumer.attached, timeout_s=60)
            before_database_restart = await _minted(ingest)
            await asyncio.to_thread(private_postgres.restart, 1.0)

            _out, err = await asyncio.wait_for(output, 120)
            assert correlator.returncode == 0 and "Traceback" not in err.decode(), err.decode()[-3000:]
            await wait_for(lambda: _at_least(ingest, ANNOUNCEMENTS), timeout_s=120)
            await consumer.drain(timeout_s=60)
            await wait_for(lambda: readiness.last() == 200, timeout_s=30)
        assert ingest.ctx is not None
        pool = ingest.ctx.pool
        minted = await outbox_events(pool, "file.minted")
        rejected = await outbox_events(pool, "ingest.rejected")
        dead = await pool.fetchval("SELECT count(*) FROM dead_letters")
        assert not ingest.failed

    announced = sorted(line for line in err.decode().splitlines() if line.startswith(str(raw)))
    assert len(announced) == ANNOUNCEMENTS
    names = collections.Counter(e.payload.name for e in minted)  # type: ignore[attr-defined]
    assert sorted(names) == sorted(Path(p).name for p in announced)  # every announcement minted ...
    assert set(names.values()) == {1}  # ... exactly once
    assert rejected == [] and dead == 0
    assert 0 < before_database_restart < ANNOUNCEMENTS  # the database restart, too, landed mid-flow
    down = readiness.between(broker_down, broker_up)
    assert len(down) > 10 and set(down) == {503}  # not ready while its consumer was detached


async def _at_least(runner: ServiceRunner, n: int) -> bool:
    return await _minted(runner) >= n
