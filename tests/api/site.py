"""A whole site (the five services) run in-process on an event loop of its own thread, for the API tests.

schemathesis and the authorization matrix make blocking HTTP calls from the test's thread, so the services cannot
share the test's event loop. They run against the real PostgreSQL and RabbitMQ, each on its own port, with the
site's own schemas, exchange and queues, all removed afterwards.
"""

from __future__ import annotations

import asyncio
import errno
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
from aiohttp import web

from services.scheduler.runs import repository
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.planning import plan_run
from services.transfer import repository as transfers
from services.transfer.openapi import EXAMPLE_PEER, SEEDED_ORDER
from services.transfer.orders import OrderRequest
from shared.auth import Principal, Role, issue_token
from shared.bus import Topology, publish_event
from shared.events import new_event
from shared.events.types import FileMinted, InstanceCreated
from shared.runner import ServiceRunner, load_spec
from shared.settings import SERVICES, PeerSettings, Settings, StoreSettings
from tests.infra import backends, drop_site_schemas, free_port_block
from tests.scheduler.runs_support import (
    STANDARD_SCRIPTS,
    input_files,
    scheduler_settings,
    wait_finished,
    workflow_config,
    write_scripts,
)

T = TypeVar("T")

# Names the seeded data answers to; the specs give them as examples, so schemathesis reaches the 200 answers.
SEEDED_FILE = "zen.2459122.30000.sum.uvh5"
SEEDED_OBSERVATION = "zen.2459122.30000"
SEEDED_SESSION = "2459122.30000"
SEEDED_WORKFLOW = "nightly"


@dataclass(frozen=True)
class Route:
    """One entry of a running service's route table."""

    service: str
    method: str
    path: str
    minimum_role: Role | None  # None: the handler is not wrapped by `requires`

    @property
    def label(self) -> str:
        """e.g. 'catalog GET /api/v1/files/{name}'."""
        return f"{self.service} {self.method} {self.path}"


def database_full(response: Any) -> bool:
    """The service answered 503 because the machine's PostgreSQL has no connection left.

    Other test runs share this machine's PostgreSQL: while all its connections are taken, a service rightly answers
    503 (try again). That says nothing about the API, so the API tests try again, as a client would.
    """
    return response.status_code == 503 and "TooManyConnectionsError" in response.text


def retry_while_database_full(send: Callable[[], Any], deadline_s: float = 30) -> Any:
    """send(), again while its answer is `database_full` (up to deadline_s); the last answer."""
    deadline = time.monotonic() + deadline_s
    response = send()
    while database_full(response) and time.monotonic() < deadline:
        time.sleep(0.25)
        response = send()
    return response


def site_settings(root: Path) -> Settings:
    """A private site: unique schemas and bus names, free ports, a store, a source root and a data dir under root."""
    name = "t" + uuid.uuid4().hex[:10]
    b = backends()
    for directory in ("sources", "store"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    base = Settings(
        site=name, database_url=b.database_url, amqp_url=b.amqp_url, bus={"prefix": name}, log_format="json",
        shutdown_grace_s=5.0, auth_secret=secrets.token_urlsafe(32),
        stores=[StoreSettings(name="main", root=root / "store")],
        peers=[PeerSettings(name=EXAMPLE_PEER, http_url="http://127.0.0.1:9")],  # orders may name it; never sent to
    )
    # The scheduler configured as its own tests configure it (data in root/var, scripts in root/scripts, inputs in
    # root/data), polling at its default pace: the site idles between tests.
    settings = scheduler_settings(base, root / "var", poll_interval_s=0.5)
    # Local-path uploads are confined to a directory of the test's own (schemathesis sends any path).
    return settings.model_copy(update={"services": {**settings.services,
                                                    "ingest": {"source_roots": [str(root / "sources")]}}})


async def _connect_when_broker_answers(url: str, timeout_s: float = 60) -> aio_pika.abc.AbstractConnection:
    """A connection to the broker, waiting while it restarts (other work on this machine restarts it now and then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await aio_pika.connect(url)
        except (aio_pika.exceptions.AMQPConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


class BackgroundSite:
    """The five services of one site, running on a private event loop in a daemon thread."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.runners: dict[str, ServiceRunner] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-test-site", daemon=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 120) -> T:
        """Run `coro` on the site's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def start(self) -> None:
        """Start every service (in SERVICES order) and seed the data the specs' examples name."""
        self._thread.start()
        for attempt in range(3):
            try:
                self.run(self._start_services())
                break
            except OSError as e:
                # Another process on this shared machine took one of the free ports between the probe and the bind.
                if e.errno != errno.EADDRINUSE or attempt == 2:
                    raise
                self.run(self._stop_services())
                self.settings = self.settings.model_copy(update={"http_base_port": free_port_block()})
        self.run(self._seed())

    async def _start_services(self) -> None:
        for name in SERVICES:
            runner = ServiceRunner(load_spec(name), self.settings)
            self.runners[name] = runner  # before start: stopping must stop a half-started site too
            await runner.start()

    async def _stop_services(self) -> None:
        for runner in reversed(self.runners.values()):
            await runner.stop()
        self.runners = {}

    def stop(self) -> None:
        """Stop every service, delete the site's bus names and schemas, end the loop."""
        try:
            self.run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()

    async def _stop(self) -> None:
        await self._stop_services()
        queues = tuple(q for name in SERVICES for q in load_spec(name).work_queues)
        connection = await _connect_when_broker_answers(self.settings.amqp_url)
        try:
            async with connection.channel() as channel:
                await Topology.from_settings(self.settings.bus, queues).delete(channel)
        finally:
            await connection.close()
        await drop_site_schemas(self.settings.database_url, self.settings.site)

    def url(self, service: str) -> str:
        """The base URL of `service`."""
        return f"http://{self.settings.http_host}:{self.settings.http_port(service)}"

    def token(self, role: Role, *, secret: str | None = None, ttl_s: float = 3600, issued: float | None = None) -> str:
        """A token of `role` (signed with the site's secret unless another is given)."""
        key = secret if secret is not None else self.settings.auth_secret.get_secret_value()  # type: ignore[union-attr]
        return issue_token(key, Principal(f"api-{role.label}", role), ttl_s,
                           now=issued if issued is not None else time.time())

    def routes(self, service: str) -> list[Route]:
        """The route table of the running service, as aiohttp dispatches it."""
        app = self.runners[service].http_app
        assert isinstance(app, web.Application), f"{service} serves no HTTP"
        table = []
        for route in app.router.routes():
            path = route.resource.canonical if route.resource is not None else "?"
            table.append(Route(service, route.method, path, getattr(route.handler, "minimum_role", None)))
        return table

    async def _seed(self) -> None:
        """A file and its instance in the catalog, a file minted by ingest, a workflow and a run in the scheduler,
        a standing order and a transfer that failed once."""
        site = self.settings.site
        minted = new_event(FileMinted(
            name=SEEDED_FILE, size=5, checksum="xxh3-128:" + "0" * 32, file_type="uvh5",
            observation_id=SEEDED_OBSERVATION, start_jd=float(SEEDED_SESSION), duration_s=15.5, origin_site=site,
            uploader="correlator", created_at=datetime(2020, 9, 30, tzinfo=UTC)), site=site, producer="ingest")
        copy = new_event(InstanceCreated(
            file_name=SEEDED_FILE, site=site, store="main", path=f"zen/{SEEDED_FILE}", size=5,
            checksum="xxh3-128:" + "0" * 32, verified_at=datetime.now(UTC)), site=site, producer="ingest")
        catalog = self.runners["catalog"]
        assert catalog.ctx is not None
        async with catalog.ctx.amqp.channel() as channel:
            exchange = await channel.get_exchange(f"{self.settings.bus.prefix}.events")
            for event in (minted, copy):
                await publish_event(exchange, event)
        await catalog.parts.stream_consumers[0].drain()
        await self._seed_ingest()
        await self._seed_scheduler()
        await self._seed_transfer()

    async def _seed_ingest(self) -> None:
        source = self.root / "sources" / SEEDED_FILE
        source.write_bytes(b"12345")
        ingest = self.runners["ingest"]
        assert ingest.ctx is not None
        import aiohttp  # here: the site's loop owns this session

        headers = {"Authorization": f"Bearer {self.token(Role.ADMIN)}"}
        async with aiohttp.ClientSession() as session, session.post(
            f"{self.url('ingest')}/api/v1/uploads/local", json={"path": str(source), "type": "uvh5"}, headers=headers,
        ) as response:
            assert response.status == 201, await response.text()

    async def _seed_transfer(self) -> None:
        transfer = self.runners["transfer"]
        assert transfer.ctx is not None
        order = OrderRequest(search={"file_type": {"is": "uvh5"}}, destination=EXAMPLE_PEER, label="seeded")
        async with transfer.ctx.pool.acquire() as conn:
            await transfers.insert_order(conn, SEEDED_ORDER, order, "seed")
            await transfers.want_transfers(conn, [(SEEDED_FILE, EXAMPLE_PEER, SEEDED_ORDER, 0)])
            await transfers.start_batch(conn, "batch-seeded", EXAMPLE_PEER, "http", [(SEEDED_FILE, EXAMPLE_PEER)])
            await transfers.finish_batch(conn, "batch-seeded", [transfers.Result(
                SEEDED_FILE, EXAMPLE_PEER, "failed", "the peer did not answer (seeded)")], retry_delays_s=[3600.0])

    async def _seed_scheduler(self) -> None:
        scheduler = self.runners["scheduler"]
        assert scheduler.ctx is not None
        scripts = self.root / "scripts"
        write_scripts(scripts, STANDARD_SCRIPTS)
        config = workflow_config(scripts, extra_options="obsflow_max_attempts = 1")
        files = input_files(self.root / "data", 2)
        run = plan_run(config, files, SchedulerOptions.from_settings(self.settings), workflow_name=SEEDED_WORKFLOW,
                       backend="local")
        async with scheduler.ctx.pool.acquire() as conn, conn.transaction():
            await repository.register_workflow(conn, SEEDED_WORKFLOW, config, run.config_sha256, "manual", None,
                                               "local")
            await repository.insert_run(conn, run, None)
        # Let it finish: its detail then has attempts and provenance, and nothing is in flight at the stop.
        await wait_finished(scheduler.ctx.pool, run.run_id, timeout_s=60)
