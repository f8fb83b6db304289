"""The soak's site: a private RabbitMQ node and PostgreSQL cluster (the only servers faults are injected into), set up
through the management API as Kubernetes would, and the five services each in a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from pydantic import SecretStr

from shared.provision.broker import BrokerApi
from shared.provision.site import setup_site
from shared.settings import SERVICES, BusSettings, Settings
from tests.infra import free_port_block
from tests.private_servers import PrivatePostgres, PrivateRabbitMQ

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0  # a service's start on a busy 2-core machine, its database or broker possibly restarting
STOP_GRACE_S = 30.0
# Short expiry of abandoned uploads: an upload attempt the harness gave up on leaves its staged bytes until then,
# and the soak checks, once quiet, that nothing is left in staging.
INGEST_OPTIONS = {"upload_expiry_s": 45, "expiry_interval_s": 5, "usage_refresh_s": 5}

# The site has no workflows, so no job runs; the scheduler refuses all the same to start as root with jobs as root.
SCHEDULER_OPTIONS = {"backend_options": {"local": {"run_as": "nobody"}}}


@dataclass
class ServiceProcess:
    """One service's process: started, SIGKILLed and started again by the soak (its own supervisor)."""

    name: str
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    kills: int = 0
    started_at: float = 0.0
    unexpected_exits: list[int] = field(default_factory=list)  # return codes of crashes (exits nobody caused)
    crash_reasons: list[str] = field(default_factory=list)  # the log line saying why, for each crash
    start_refusals: int = 0  # exits at start-up because a server was unreachable (restarted as by a supervisor)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


class ChaosSite:
    """A site of its own: name and bus prefix, private servers, data directory, ports, service processes."""

    def __init__(self) -> None:
        self.name = "c" + uuid.uuid4().hex[:10]
        self.directory = Path(tempfile.mkdtemp(prefix=f"obsflow-chaos-{self.name}-"))
        self.directory.chmod(0o755)
        self.data_dir = self.directory / "data"
        self.secret = secrets.token_urlsafe(32)
        self.broker = PrivateRabbitMQ(management=True)
        self.database = PrivatePostgres()
        self.base_port = 0
        self.keep = False  # keep the directory (logs) when closing: set when an invariant fails
        self.killed: set[int] = set()  # pids of the processes the soak killed (their exits are expected)
        self.services = {name: ServiceProcess(name, self.directory / f"{name}.log") for name in SERVICES}

    @property
    def settings(self) -> Settings:
        """The site's settings, as its services build them from the environment `env` gives them."""
        return Settings(
            site=self.name, bus=BusSettings(prefix=self.name), data_dir=self.data_dir, http_base_port=self.base_port,
            database_url=f"postgresql://127.0.0.1:{self.database.port}/postgres",
            amqp_url=f"amqp://127.0.0.1:{self.broker.port}/", auth_secret=SecretStr(self.secret),
            services={"ingest": INGEST_OPTIONS, "scheduler": SCHEDULER_OPTIONS},
        )

    @property
    def broker_api(self) -> BrokerApi:
        return BrokerApi(self.broker.management_url, "guest", "guest")

    @property
    def admin_database_url(self) -> str:
        return self.database.database_url

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.settings.http_port(service)}{path}"

    def env(self) -> dict[str, str]:
        """The caller's environment without obsflow settings, plus the site's."""
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBSFLOW_")}
        env.update(
            OBSFLOW_SITE=s.site, OBSFLOW_BUS__PREFIX=s.bus.prefix, OBSFLOW_HTTP_BASE_PORT=str(s.http_base_port),
            OBSFLOW_DATA_DIR=str(s.data_dir), OBSFLOW_DATABASE_URL=s.database_url, OBSFLOW_AMQP_URL=s.amqp_url,
            OBSFLOW_AUTH_SECRET=self.secret, OBSFLOW_LOG_FORMAT="json", OBSFLOW_LOG_LEVEL="info",
            OBSFLOW_SERVICES=json.dumps(s.services), OBSFLOW_SHUTDOWN_GRACE_S="10",
        )
        return env

    async def start(self) -> None:
        """Start the servers, set the site up through the management API, start every service, wait until ready."""
        await asyncio.gather(asyncio.to_thread(self.broker.start), asyncio.to_thread(self.database.start))
        self.base_port = free_port_block(len(SERVICES))
        self.data_dir.mkdir()
        await setup_site(self.settings, admin_database_url=self.admin_database_url, broker_api=self.broker_api)
        for name in SERVICES:
            await self.start_service(name)
        await self.wait_ready(list(SERVICES))

    async def start_service(self, name: str) -> None:
        """`obsflow service NAME` in a process of its own, its output appended to its log (unless it runs already)."""
        service = self.services[name]
        if service.alive:
            return
        with service.log.open("ab") as out:
            service.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shared.cli.main", "service", name, env=self.env(), cwd=self.directory,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        service.starts += 1
        service.started_at = time.monotonic()

    async def kill_service(self, name: str) -> None:
        """SIGKILL the service's process (ours, by its pid) and reap it."""
        service = self.services[name]
        if service.process is not None and service.process.returncode is None:
            self.killed.add(service.process.pid)
            service.process.send_signal(signal.SIGKILL)
            await service.process.wait()
            service.kills += 1

    async def ready(self, name: str) -> bool:
        """True when the service's process runs and its /readyz answers 200."""
        if not self.services[name].alive:
            return False
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, session.get(
                self.url(name, "/readyz")
            ) as answer:
                return answer.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_ready(
        self, names: list[str], timeout_s: float = READY_TIMEOUT_S, *, exits_fail: bool = True
    ) -> None:
        """Until each of `names` is ready; RuntimeError naming those that are not (with their logs' ends). With
        `exits_fail` False, a service that exits is waited for (its supervisor starts it again)."""
        deadline = time.monotonic() + timeout_s
        waiting = list(names)
        while waiting:
            dead = [n for n in waiting if not self.services[n].alive]
            if dead and exits_fail:
                raise RuntimeError(f"{', '.join(dead)} exited while starting:\n{self.log_tails(dead)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{', '.join(waiting)} not ready after {timeout_s:.0f} s:\n{self.log_tails(waiting)}")
            waiting = [n for n in waiting if not await self.ready(n)]
            if waiting:
                await asyncio.sleep(0.5)  # a poll interval between checks of a condition

    def log_tails(self, names: list[str], lines: int = 15) -> str:
        """The ends of the services' logs, for messages."""
        parts = []
        for name in names:
            path = self.services[name].log
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {name} ({path})\n" + "\n".join(text))
        return "\n".join(parts)

    async def admin(self) -> asyncpg.Connection:
        """A connection to the private cluster as its administrator."""
        return await asyncpg.connect(self.admin_database_url, timeout=10)

    async def stop(self) -> None:
        """SIGTERM every service, then SIGKILL what outlives the grace."""
        running = [s.process for s in self.services.values() if s.alive and s.process is not None]
        self.killed.update(p.pid for p in running)
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                process.kill()
                await process.wait()

    def close(self, keep: bool = False) -> None:
        """Remove the servers and (unless `keep` or `self.keep`) the site's directory."""
        with contextlib.suppress(subprocess.SubprocessError, OSError, RuntimeError):
            self.broker.close()
        with contextlib.suppress(subprocess.SubprocessError, OSError, RuntimeError):
            self.database.close()
        if not (keep or self.keep):
            shutil.rmtree(self.directory, ignore_errors=True)
