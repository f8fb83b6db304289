"""Benchmark: the ingest service end to end against `cp` + `sync` of the same bytes in the same run.

(a) large files via observation.announced and via HTTP upload (MB/s); (b) many 1 MiB files via announced
(files/s); (c) the same small files via authenticated HTTP upload. The service runs as its own process
(`obsflow service ingest`), as in production. Not a test: prints its figures, the last line one JSON object.

    .venv/bin/python -m tests.benchmarks.ingest --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from shared.auth import Principal, Role, issue_token
from shared.bus import Topology, publish_event
from shared.client import ObsflowClient
from shared.events import new_event
from shared.events.types import ObservationAnnounced
from tests.benchmarks.disk_copy import run_cp, write_sources
from tests.infra import backends
from tests.ingest.service_support import free_port_block

MiB = 1024 * 1024
GiB = 1024 * MiB
ROOT = Path("/tmp/obsflow-bench-ingest")
SOURCES = ROOT / "var" / "incoming"  # the site's default source root (its data directory is ROOT/var)
SECRET = secrets.token_urlsafe(32)  # a service refuses a guessable secret
HTTP_CLIENTS = 32  # small files uploaded side by side: enough to keep the server busy (8 leaves it waiting on fsyncs)


class Site:
    """A private site: its own schemas, exchange and queues, and a running ingest process."""

    def __init__(self, root: Path) -> None:
        self.name = "b" + uuid.uuid4().hex[:10]
        self.root = root
        self.store = root / "store"
        self.store.mkdir(parents=True)
        self.port = free_port_block()
        b = backends()
        self.database_url, self.amqp_url = b.database_url, b.amqp_url
        self.proc: asyncio.subprocess.Process | None = None
        self.conn: asyncpg.Connection | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {
            **os.environ, "OBSFLOW_SITE": self.name, "OBSFLOW_DATABASE_URL": self.database_url,
            "OBSFLOW_AMQP_URL": self.amqp_url, "OBSFLOW_BUS__PREFIX": self.name,
            "OBSFLOW_HTTP_BASE_PORT": str(self.port),
            "OBSFLOW_LOG_FORMAT": "json", "OBSFLOW_LOG_LEVEL": "warning", "OBSFLOW_AUTH_SECRET": SECRET,
            "OBSFLOW_DATA_DIR": str(self.root / "var"),
            "OBSFLOW_STORES": json.dumps([{"name": "main", "root": str(self.store)}]),
        }
        if "BENCH_PREFETCH" in os.environ:  # otherwise the service's default
            env["OBSFLOW_SERVICES__INGEST__PREFETCH"] = os.environ["BENCH_PREFETCH"]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli.main", "service", "ingest", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        await _until(self._ready, timeout_s=60, poll_s=0.1)
        self.conn = await asyncpg.connect(self.database_url, server_settings={"search_path": f"{self.name}_ingest"})

    async def _ready(self) -> bool:
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(f"the ingest service exited ({self.proc.returncode}); is RabbitMQ up? re-run")
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{self.url}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientConnectionError:
            return False

    async def minted(self) -> int:
        assert self.conn is not None
        return int(await self.conn.fetchval("SELECT count(*) FROM files"))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 60)
        if self.conn is not None:
            await self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}_ingest" CASCADE')
            await self.conn.close()
        connection = await aio_pika.connect_robust(self.amqp_url)
        async with connection, connection.channel() as channel:
            from services.ingest.service import SPEC

            await Topology(prefix=self.name, work_queues=SPEC.work_queues).delete(channel)


async def via_announced(site: Site, sources: list[Path]) -> float:
    """Seconds from the first announcement to the last file minted."""
    before = await site.minted()
    connection = await aio_pika.connect_robust(site.amqp_url)
    async with connection, connection.channel() as channel:
        exchange = await channel.get_exchange(f"{site.name}.events")
        started = time.perf_counter()
        events = [new_event(ObservationAnnounced(path=str(p), file_type="uvh5", expected_size=p.stat().st_size),
                            site=site.name, producer="bench") for p in sources]
        await asyncio.gather(*(publish_event(exchange, e) for e in events))

        async def all_minted() -> bool:
            return await site.minted() >= before + len(sources)

        await _until(all_minted, timeout_s=600, poll_s=0.02)
        return time.perf_counter() - started


async def via_http(site: Site, sources: list[Path], concurrency: int) -> float:
    """Seconds to upload every source through the two-phase HTTP API, `concurrency` at a time."""
    token = issue_token(SECRET, Principal("bench", Role.READ_APPEND), 3600)
    gate = asyncio.Semaphore(concurrency)
    async with ObsflowClient(site.url, token) as client:

        async def one(path: Path) -> None:
            async with gate:
                await client.upload(path, file_type="uvh5", name=f"http.{path.name}")

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in sources))
        return time.perf_counter() - started


async def _until(condition: Callable[[], Awaitable[bool]], *, timeout_s: float, poll_s: float) -> None:
    """Poll `condition` until it holds; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 (the condition lives in another process's database)
            await asyncio.sleep(poll_s)


def _small_sources(count: int) -> list[Path]:
    # Other names than the large files' (write_sources numbers both from zero): no name conflicts.
    return [p.rename(p.with_name(f"small.{p.name}")) for p in write_sources(SOURCES / "small", count, MiB)]


def _fresh_root() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    SOURCES.mkdir(parents=True)


class CpBaseline:
    """`cp` + `sync` of the same sources, timed before, between and after the contenders; the median counts.

    This VM's disk swings by 3x between minutes, so one cp run is no baseline. Copies are kept until the end
    of the run when the disk has room: deleting them makes the next writer slow (discards), and that would be
    charged to whichever contender comes next.
    """

    def __init__(self, sources: list[Path], label: str, keep: bool) -> None:
        self.sources = sources
        self.label = label
        self.keep = keep
        self.seconds: list[float] = []

    def measure(self) -> None:
        destination = ROOT / f"cp-{self.label}-{len(self.seconds)}"
        destination.mkdir()
        started = time.perf_counter()
        run_cp(self.sources, destination)
        self.seconds.append(time.perf_counter() - started)
        if not self.keep:
            shutil.rmtree(destination)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


async def run(quick: bool) -> dict[str, Any]:
    free = shutil.disk_usage("/tmp").free
    large_size = 128 * MiB if quick else (1 * GiB if free > 16 * GiB else 256 * MiB)
    small_count = 300 if quick else 2000
    # Sources, three cp copies and two ingested copies of the large files at once, with room to spare.
    keep = free > 2 * 6 * 5 * large_size
    await asyncio.to_thread(_fresh_root)
    site = Site(ROOT)
    results: dict[str, Any] = {"quick": quick, "large_file_bytes": large_size, "large_files": 5,
                               "small_files": small_count, "small_file_bytes": MiB, "disk_free_gib": free // GiB}
    try:
        await site.start()
        large = await asyncio.to_thread(write_sources, SOURCES / "large", 5, large_size)
        total = 5 * large_size / 1e6
        cp = CpBaseline(large, "large", keep)
        await asyncio.to_thread(cp.measure)
        announced_large = await via_announced(site, large)
        await asyncio.to_thread(cp.measure)
        http_large = await via_http(site, large, concurrency=1)
        await asyncio.to_thread(cp.measure)
        results["large"] = {
            "cp_MBps": round(total / cp.median), "cp_MBps_runs": [round(total / s) for s in cp.seconds],
            "announced_MBps": round(total / announced_large), "http_MBps": round(total / http_large),
            "announced_ratio_to_cp": round(cp.median / announced_large, 2),
            "http_ratio_to_cp": round(cp.median / http_large, 2),
        }
        print("large:", results["large"], file=sys.stderr)
        small = await asyncio.to_thread(_small_sources, small_count)
        cp = CpBaseline(small, "small", keep)
        await asyncio.to_thread(cp.measure)
        announced_small = await via_announced(site, small)
        await asyncio.to_thread(cp.measure)
        http_small = await via_http(site, small, concurrency=HTTP_CLIENTS)
        await asyncio.to_thread(cp.measure)
        results["small"] = {
            "cp_files_per_s": round(small_count / cp.median),
            "cp_files_per_s_runs": [round(small_count / s) for s in cp.seconds],
            "announced_files_per_s": round(small_count / announced_small),
            "http_files_per_s": round(small_count / http_small), "http_clients": HTTP_CLIENTS,
            "announced_ratio_to_cp": round(cp.median / announced_small, 2),
            "http_ratio_to_cp": round(cp.median / http_small, 2),
        }
        print("small:", results["small"], file=sys.stderr)
    finally:
        await site.stop()
        shutil.rmtree(ROOT, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5 x 128 MiB and 300 x 1 MiB (under a minute)")
    args = parser.parse_args()
    subprocess.run(["sync"], check=True)
    print(json.dumps(asyncio.run(run(args.quick))))


if __name__ == "__main__":
    main()
