"""A site started the way a newcomer starts one, `make up` in the clone, with a name, bus prefix, ports and an empty
data directory of its own; stopped as Ctrl-C stops it, and removed afterwards (roles, broker users, topology)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aio_pika
import asyncpg
import pytest
from yarl import URL

from shared import credentials
from shared.bus.topology import Topology
from shared.provision.grants import broker_grants
from shared.provision.site import DATABASE_PRINCIPALS, site_work_queues
from shared.settings import SERVICES, Settings, load_settings
from tests.infra import LOCAL_AMQP, backends, free_port_block

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
START_TIMEOUT_S = 300.0  # `make up` on a busy 2-core machine: set-up (rabbitmqctl), then five service processes
STOP_TIMEOUT_S = 60.0


@dataclass
class MadeUpSite:
    """A running `make up`: the environment its terminals share, its settings as the services see them."""

    env: dict[str, str]
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def settings(self) -> Settings:
        """The site's settings, as `obsflow` loads them in its terminals (the example site's config included)."""
        with _environment(self.env):
            return load_settings(REPO / "examples" / "obsflow.toml")

    def url(self, service: str, path: str) -> str:
        """http://127.0.0.1:<the service's port><path>."""
        return f"http://127.0.0.1:{self.settings.http_port(service)}{path}"

    def log_tail(self, lines: int = 40) -> str:
        """The end of `make up`'s output (for failure messages)."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def site_environment(name: str, data_dir: Path) -> dict[str, str]:
    """The caller's environment without any obsflow setting, plus the site's identity: its name and bus prefix, its
    own block of ports, its data directory, the tests' database (no account in the URLs: each service its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSFLOW_")}
    env.update(
        OBSFLOW_SITE=name, OBSFLOW_BUS__PREFIX=name, OBSFLOW_HTTP_BASE_PORT=str(free_port_block()),
        OBSFLOW_DATA_DIR=str(data_dir), OBSFLOW_DATABASE_URL=_without_user(backends().database_url),
        OBSFLOW_AMQP_URL=_without_user(backends().amqp_url),
    )
    return env


@contextlib.contextmanager
def made_up_site(name: str) -> Iterator[MadeUpSite]:
    """`make up` for a new site in an empty data directory; Ctrl-C (SIGINT to its process group) afterwards."""
    if backends().amqp_url != LOCAL_AMQP or shutil.which("rabbitmqctl") is None:
        pytest.fail("`make up` sets the site up with rabbitmqctl on the local broker (run `make services`)")
    # The jobs' account must enter the data directory: pytest's own tmp_path is private to root.
    parent = Path(tempfile.mkdtemp(prefix=f"obsflow-{name}-"))
    parent.chmod(0o755)
    data_dir = parent / "data"  # does not exist yet: a fresh site
    env = site_environment(name, data_dir)
    log = parent / "make-up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["make", "up"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    site = MadeUpSite(env, data_dir, log, process)
    try:
        wait_until_ready(site)
        yield site
    finally:
        stop(site)
        asyncio.run(remove_site(site.settings))
        shutil.rmtree(parent, ignore_errors=True)


def wait_until_ready(site: MadeUpSite) -> None:
    """Until every service answers /readyz with 200; fails with `make up`'s output if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = list(SERVICES)
    while waiting:
        if site.process.poll() is not None:
            pytest.fail(f"`make up` exited with {site.process.returncode}:\n{site.log_tail()}")
        if '"service_exited"' in site.log.read_text(errors="replace"):  # a fresh site's service must not crash
            pytest.fail(f"a service exited while the site started:\n{site.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{', '.join(waiting)} not ready {START_TIMEOUT_S:.0f} s after `make up`:\n{site.log_tail()}")
        waiting = [s for s in waiting if not _ready(site.url(s, "/readyz"))]
        if waiting:
            time.sleep(0.5)  # a poll interval between checks of a condition


def wait_until(probe: Callable[[], T], expected: T, timeout_s: float, what: str) -> None:
    """Poll `probe` until it returns `expected`; fail naming `what` and the last value after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (value := probe()) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {value!r} after {timeout_s:.0f} s, expected {expected!r}")
        time.sleep(0.5)  # a poll interval between checks of a condition


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop(site: MadeUpSite) -> None:
    """Ctrl-C: SIGINT to `make up`'s process group (ours: it was started in a session of its own)."""
    if site.process.poll() is None:
        os.killpg(site.process.pid, signal.SIGINT)
        try:
            site.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(site.process.pid, signal.SIGKILL)
            site.process.wait(STOP_TIMEOUT_S)
            pytest.fail(f"`make up` did not stop within {STOP_TIMEOUT_S:.0f} s of Ctrl-C:\n{site.log_tail()}")


async def remove_site(settings: Settings) -> None:
    """Drop what `obsflow setup` made for the site: schemas, roles, broker users, the bus (queues and exchanges)."""
    admin_url = backends().database_url
    conn = await asyncpg.connect(admin_url)
    try:
        roles = [credentials.database_role(settings, p) for p in DATABASE_PRINCIPALS]
        for role in roles:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{role}" CASCADE')
        for role in roles:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f'DROP OWNED BY "{role}"')
                await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()
    for grant in broker_grants(settings.site, settings.bus.prefix):
        await asyncio.to_thread(
            subprocess.run, ["rabbitmqctl", "-q", "delete_user", credentials.broker_user(settings, grant.principal)],
            capture_output=True, timeout=60, check=False,
        )
    connection = await aio_pika.connect(backends().amqp_url)
    async with connection, connection.channel() as channel:
        await Topology.from_settings(settings.bus, site_work_queues()).delete(channel)


def _without_user(url: str) -> str:
    return str(URL(url).with_user(None))


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
