"""Where the tests' PostgreSQL and RabbitMQ are: testcontainers when a Docker engine answers, else the local ones."""

from __future__ import annotations

import functools
import os
import random
import shutil
import socket
import subprocess
from dataclasses import dataclass

import aio_pika
import asyncpg

LOCAL_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True)
class Backends:
    """Connection URLs of the database and broker every test uses."""

    database_url: str
    amqp_url: str


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def backends() -> Backends:
    """Environment overrides first, then containers (Docker), then the services running on this machine."""
    db = os.environ.get("OBSFLOW_TEST_DATABASE_URL")
    amqp = os.environ.get("OBSFLOW_TEST_AMQP_URL")
    if db and amqp:
        return Backends(db, amqp)
    if os.environ.get("OBSFLOW_TEST_CONTAINERS", "auto") != "never" and _docker_answers():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        pg = PostgresContainer("postgres:15").start()
        mq = RabbitMqContainer("rabbitmq:3.10").start()
        params = mq.get_connection_params()
        return Backends(
            pg.get_connection_url(driver=None),
            f"amqp://guest:guest@{params.host}:{params.port}/",
        )
    return Backends(LOCAL_DATABASE, LOCAL_AMQP)


def free_port_block(size: int = 5) -> int:
    """A base port with `size` free ports after it (one per service).

    Chosen below Linux's ephemeral range (32768-60999): there, client connections of every process on the machine
    (and their TIME_WAIT leftovers, thousands while tests run) take ports that a server then cannot bind.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000 - size)
        if all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports on 127.0.0.1")


def _port_free(port: int) -> bool:
    """True if a server could listen on `port` now (bound as aiohttp binds: with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def drop_site_schemas(database_url: str, prefix: str) -> None:
    """Drop every schema named `<prefix>_*` (a test site's services' schemas) with what they hold."""
    conn = await asyncpg.connect(database_url)
    try:
        for row in await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                                    prefix.replace("_", "\\_") + "\\_%"):
            await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
    finally:
        await conn.close()


async def delete_broker_names(prefixes: set[str]) -> None:
    """Delete the local broker's queues and exchanges named `<prefix>.*` or `<prefix>-*` for any of `prefixes`."""
    queues, exchanges = _broker_names("list_queues"), _broker_names("list_exchanges")
    mine = tuple(f"{p}." for p in prefixes) + tuple(f"{p}-" for p in prefixes)
    connection = await aio_pika.connect(backends().amqp_url)
    async with connection:
        for name in (n for n in queues if n.startswith(mine)):
            async with connection.channel() as channel:
                await channel.queue_delete(name)
        for name in (n for n in exchanges if n.startswith(mine)):
            async with connection.channel() as channel:
                await channel.exchange_delete(name)


def _broker_names(what: str) -> list[str]:
    """Names the local broker lists (empty when it is not local: a container goes away by itself)."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or backends().amqp_url != LOCAL_AMQP:
        return []
    result = subprocess.run([ctl, "-q", what, "name"], capture_output=True, text=True, timeout=60)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]
