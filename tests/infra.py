"""Where the tests' PostgreSQL and RabbitMQ are: testcontainers when a Docker engine answers, else the local ones."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass

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
    """A base port with `size` free ports after it (one per service)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size < 65000 and all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports on 127.0.0.1")


def _port_free(port: int) -> bool:
    """Whether a server could bind the port now: nothing listens there and no client connection holds it.

    Binding is the only true test: a port that is the local end of a closed client connection (TIME_WAIT, a minute
    after many HTTP calls) refuses connections yet cannot be bound, even with SO_REUSEADDR as asyncio sets it.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
