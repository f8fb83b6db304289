"""Benchmark: replication by HTTP push between two whole sites on this machine (tests/sites' harness: ingest,
catalog and transfer in-process, real PostgreSQL and RabbitMQ, every byte through the link's proxies).

(1) throughput: files already minted at the source, then a standing order created over them; timed from the
order's creation until the peer's ingest holds every instance verified; against `cp` + `sync` of the same bytes on
the same disk in the same run (before and after; the median counts), for large and for 1 MiB files. (2) latency:
files announced one at a time at a modest rate under a standing order; mint (source `files.created_at`) and
announcement to verified replica (peer `instances.verified_at`), p50 and p95. (3) catch-up: the link cut, files
minted meanwhile, the link restored; files/s replicated from the backlog, against (1)'s small-file rate.
Not a test: prints its figures, the last line one JSON object.

    .venv/bin/python -m tests.benchmarks.replication --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from shared.bus import publish_event
from shared.events import new_event
from shared.events.types import ObservationAnnounced
from shared.logging import configure_logging
from shared.settings import Settings
from tests.benchmarks.disk_copy import run_cp, write_sources
from tests.infra import backends, delete_broker_names, drop_site_schemas
from tests.sites.harness import Sites, SiteUnderTest, linked_sites
from tests.sites.link import Link

MiB = 1024 * 1024
GiB = 1024 * MiB
ROOT = Path("/tmp/obsflow-bench-replication")
SOURCE, PEER = "src", "dst"
# Enough attempts that the backlog of a cut link is still queued, not failed, when the link returns.
TRANSFER = {"max_attempts": 1000}


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def _until(condition: Callable[[], Awaitable[bool]], *, timeout_s: float, poll_s: float = 0.02) -> None:
    """Poll `condition` until it holds; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 (the condition lives in the sites' databases)
            await asyncio.sleep(poll_s)


async def _count(site: SiteUnderTest, service: str, sql: str, prefix: str) -> int:
    return int(await site.fetchval(service, sql, prefix + "%"))


async def held(site: SiteUnderTest, prefix: str) -> int:
    """Verified instances at `site`'s ingest of files named `prefix*`."""
    return await _count(site, "ingest", "SELECT count(*) FROM instances WHERE file_name LIKE $1", prefix)


async def wait_held(site: SiteUnderTest, prefix: str, count: int, timeout_s: float = 1800) -> None:
    async def done() -> bool:
        return await held(site, prefix) >= count

    await _until(done, timeout_s=timeout_s)


async def wait_catalogued(site: SiteUnderTest, prefix: str, count: int) -> None:
    """The source's catalog knows its instances (an order's sweep finds files through it)."""
    sql = "SELECT count(*) FROM instances WHERE site = $2 AND file_name LIKE $1"

    async def done() -> bool:
        return int(await site.fetchval("catalog", sql, prefix + "%", site.name)) >= count

    await _until(done, timeout_s=600)


async def announce(channel: aio_pika.abc.AbstractChannel, site: SiteUnderTest, prefix: str,
                   paths: Sequence[Path]) -> list[str]:
    """A correlator announces files it wrote; they are minted as `prefix` + their file name."""
    exchange = await channel.get_exchange(f"{site.settings.bus.prefix}.events")
    names = [prefix + p.name for p in paths]
    events = [new_event(ObservationAnnounced(path=str(p), file_type="uvh5", name=n, expected_size=p.stat().st_size),
                        site=site.name, producer="correlator") for p, n in zip(paths, names, strict=True)]
    await asyncio.gather(*(publish_event(exchange, e) for e in events))
    return names


async def create_order(site: SiteUnderTest, prefix: str) -> None:
    body = {"search": {"name": {"matches": prefix + "%"}}, "destination": PEER, "label": f"bench {prefix}"}
    headers = {"Authorization": f"Bearer {site.token()}"}
    async with aiohttp.ClientSession(headers=headers) as http, \
            http.post(f"{site.url('transfer')}/api/v1/orders", json=body) as response:
        if response.status != 201:
            raise RuntimeError(f"the order was refused: {response.status} {await response.text()}")


def cp_seconds(sources: Sequence[Path], label: str) -> float:
    """`cp` + `sync` of `sources` to a fresh directory on the same disk; the copy is removed afterwards."""
    destination = ROOT / f"cp-{label}-{uuid.uuid4().hex[:6]}"
    destination.mkdir()
    started = time.perf_counter()
    run_cp(list(sources), destination)
    seconds = time.perf_counter() - started
    shutil.rmtree(destination)
    return seconds


async def throughput(sites: Sites, channel: aio_pika.abc.AbstractChannel, prefix: str, count: int,
                     size: int) -> dict[str, Any]:
    """Mint `count` files of `size` at the source, then an order over them: until all are verified at the peer."""
    src, dst = sites[SOURCE], sites[PEER]
    paths = await asyncio.to_thread(write_sources, src.incoming / prefix.rstrip("."), count, size)
    await announce(channel, src, prefix, paths)
    await wait_held(src, prefix, count)
    await wait_catalogued(src, prefix, count)
    cp = [await asyncio.to_thread(cp_seconds, paths, prefix)]
    started, cpu = time.perf_counter(), time.process_time()
    await create_order(src, prefix)
    await wait_held(dst, prefix, count)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    cp.append(await asyncio.to_thread(cp_seconds, paths, prefix))
    await asyncio.to_thread(_remove, paths)
    megabytes, cp_median = count * size / 1e6, statistics.median(cp)
    return {
        "files": count, "file_bytes": size, "seconds": round(seconds, 2),
        "files_per_s": round(count / seconds, 1), "MBps": round(megabytes / seconds),
        "cp_files_per_s": round(count / cp_median, 1), "cp_MBps": round(megabytes / cp_median),
        "cp_MBps_runs": [round(megabytes / s) for s in cp], "ratio_to_cp": round(cp_median / seconds, 2),
        # CPU of this one process (both sites' services, the link's proxies; not RabbitMQ's or PostgreSQL's)
        "process_cpu_ms_per_file": round(cpu * 1000 / count, 1), "process_cpu_share": round(cpu / seconds, 2),
    }


async def latency(sites: Sites, channel: aio_pika.abc.AbstractChannel, count: int, rate_hz: float) -> dict[str, Any]:
    """Files announced one at a time under a standing order: mint and announcement to verified replica."""
    src, dst = sites[SOURCE], sites[PEER]
    prefix = "lat."
    await create_order(src, prefix)
    paths = await asyncio.to_thread(write_sources, src.incoming / "lat", count, MiB)
    announced: dict[str, float] = {}
    for path in paths:
        started = time.time()
        (name,) = await announce(channel, src, prefix, [path])
        announced[name] = started
        await asyncio.sleep(1 / rate_hz)  # the pace of the announcements (the thing measured), not a wait
    await wait_held(dst, prefix, count)
    sql = "SELECT {col} AS name, extract(epoch FROM {ts})::float8 AS at FROM {table} WHERE {col} LIKE $1"
    minted = dict(await src.runners["ingest"].ctx.pool.fetch(
        sql.format(col="name", ts="created_at", table="files"), prefix + "%"))
    verified = dict(await dst.runners["ingest"].ctx.pool.fetch(
        sql.format(col="file_name", ts="verified_at", table="instances"), prefix + "%"))
    from_mint = [verified[n] - minted[n] for n in announced]
    from_announce = [verified[n] - announced[n] for n in announced]
    await asyncio.to_thread(_remove, paths)
    return {
        "files": count, "file_bytes": MiB, "rate_per_s": rate_hz,
        "mint_to_verified_p50_s": round(statistics.median(from_mint), 3),
        "mint_to_verified_p95_s": round(_percentile(from_mint, 0.95), 3),
        "announce_to_verified_p50_s": round(statistics.median(from_announce), 3),
        "announce_to_verified_p95_s": round(_percentile(from_announce, 0.95), 3),
        "baseline": "not measured: the HERA Librarian evaluates orders every ~20 min, the SO Librarian hourly",
    }


async def catch_up(sites: Sites, channel: aio_pika.abc.AbstractChannel, count: int) -> dict[str, Any]:
    """The link cut, `count` files minted at the source under a standing order, the link restored."""
    src, dst = sites[SOURCE], sites[PEER]
    prefix = "catch."
    await create_order(src, prefix)
    paths = await asyncio.to_thread(write_sources, src.incoming / "catch", count, MiB)
    link = sites.link(SOURCE, PEER)
    link.cut("reset")
    cut_at = time.perf_counter()
    await announce(channel, src, prefix, paths)
    await wait_held(src, prefix, count)
    at_restore = await held(dst, prefix)
    restored = time.perf_counter()
    link.restore()
    await wait_held(dst, prefix, count)
    seconds = time.perf_counter() - restored
    await asyncio.to_thread(_remove, paths)
    backlog = count - at_restore
    return {"files": count, "file_bytes": MiB, "cut_s": round(restored - cut_at, 2), "backlog_files": backlog,
            "seconds_after_restore": round(seconds, 2), "files_per_s": round(backlog / seconds, 1)}


async def loopback_cost(total: int = 256 * MiB) -> dict[str, Any]:
    """What moving bytes over loopback costs this process, directly and through a link's proxy (the harness's part
    of every replica's cost: a real link has no proxy in the sites' process)."""

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(MiB):
            pass
        writer.close()

    async def stream_to(port: int) -> tuple[float, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        chunk, started, cpu = b"\0" * (4 * MiB), time.perf_counter(), time.process_time()
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        await reader.read()
        writer.close()
        return time.perf_counter() - started, time.process_time() - cpu

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    link = Link(server.sockets[0].getsockname()[1])
    await link.start()
    try:
        direct, proxied = await stream_to(link.target[1]), await stream_to(link.port)
    finally:
        await link.stop()
        server.close()
    return {"direct_MBps": round(total / 1e6 / direct[0]),
            "direct_cpu_ms_per_MiB": round(direct[1] * 1e3 * MiB / total, 2),
            "via_link_MBps": round(total / 1e6 / proxied[0]),
            "via_link_cpu_ms_per_MiB": round(proxied[1] * 1e3 * MiB / total, 2)}


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _base_settings(log_level: str) -> Settings:
    name = "bench" + uuid.uuid4().hex[:8]
    b = backends()
    return Settings(site=name, database_url=b.database_url, amqp_url=b.amqp_url, bus={"prefix": name},
                    log_format="json", log_level=log_level, shutdown_grace_s=5.0, db_pool_size=6,
                    auth_secret=f"bench-secret-of-{name}-{uuid.uuid4().hex}", data_dir=ROOT / "base")


async def run(quick: bool, log_level: str) -> dict[str, Any]:
    free = shutil.disk_usage("/tmp").free
    large_size, large_count = (128 * MiB, 3) if quick else (1 * GiB, 3)
    if free < 8 * large_count * large_size:  # sources, source store, peer store, cp copy, with room to spare
        raise SystemExit(f"{free // GiB} GiB free on /tmp: not enough for {large_count} x {large_size // MiB} MiB")
    small_count, latency_count, catch_count = (200, 30, 200) if quick else (1000, 100, 1000)
    await asyncio.to_thread(lambda: (shutil.rmtree(ROOT, ignore_errors=True), ROOT.mkdir(parents=True)))
    base = _base_settings(log_level)
    configure_logging("bench", base.site, "json", log_level)  # the services log through it, to stderr
    results: dict[str, Any] = {"quick": quick, "manager": "http", "disk_free_gib": free // GiB,
                               "throughput_timed_from": "order created over files already minted at the source"}
    results["loopback"] = await loopback_cost()
    connection = await aio_pika.connect_robust(base.amqp_url)
    try:
        async with connection, linked_sites(base, ROOT, [SOURCE, PEER], transfer=TRANSFER) as sites:
            await sites[PEER].start()
            await sites[SOURCE].start()
            channel = await connection.channel()
            for label, prefix, count, size in (("large", "large.", large_count, large_size),
                                               ("small", "small.", small_count, MiB)):
                results[label] = await throughput(sites, channel, prefix, count, size)
                print(f"{label}:", results[label], file=sys.stderr)
            results["latency"] = await latency(sites, channel, latency_count, rate_hz=2.0)
            print("latency:", results["latency"], file=sys.stderr)
            results["catch_up"] = await catch_up(sites, channel, catch_count)
            results["catch_up"]["ratio_to_link_up_small"] = round(
                results["catch_up"]["files_per_s"] / results["small"]["files_per_s"], 2)
            print("catch_up:", results["catch_up"], file=sys.stderr)
    finally:
        await clean_up(base)
    return results


async def clean_up(base: Settings) -> None:
    """Remove the sites' schemas, queues and exchanges and the files, each step even when another failed; the server
    being out of connections (other work on the machine) is waited out a little."""
    try:
        for attempt in range(10):
            try:
                await drop_site_schemas(base.database_url, base.site)
                break
            except asyncpg.TooManyConnectionsError:
                if attempt == 9:
                    raise
                await asyncio.sleep(1.0 + attempt)  # a bounded retry of a transient refusal, not a wait on a condition
    finally:
        try:
            await delete_broker_names({base.bus.prefix})
        finally:
            await asyncio.to_thread(shutil.rmtree, ROOT, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="3 x 128 MiB, 200 x 1 MiB, 30 latency files, a backlog of 200 (about a minute)")
    parser.add_argument("--log-level", default="warning",
                        help="the services' log level (info renders a few lines per file, on the same event loop)")
    args = parser.parse_args()
    subprocess.run(["sync"], check=True)
    print(json.dumps(asyncio.run(run(args.quick, args.log_level))))


if __name__ == "__main__":
    main()
