"""A stream consumer in its own process, for tests that kill it with SIGKILL.

Environment: DSN, SCHEMA, AMQP_URL, PREFIX, DELAY_S (per event, to be caught mid-batch).
Prints `attached` once consuming.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
from prometheus_client import CollectorRegistry

from shared.bus import StreamConsumer, Topology
from shared.db import create_pool
from shared.events import Event
from shared.logging import configure_logging
from shared.metrics import BusMetrics
from tests.foundation.support import project_minted


async def main() -> None:
    configure_logging("projector", "test", "json")
    delay = float(os.environ.get("DELAY_S", "0"))
    pool = await create_pool(os.environ["DSN"], os.environ["SCHEMA"])

    async def slow_projection(conn: asyncpg.Connection, event: Event) -> None:
        await project_minted(conn, event)
        await asyncio.sleep(delay)

    consumer = StreamConsumer(
        "projector", pool, os.environ["AMQP_URL"], Topology(prefix=os.environ["PREFIX"]),
        {"file.minted": slow_projection}, BusMetrics(CollectorRegistry()), batch_size=100,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await consumer.wait_ready()
    print("attached", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
