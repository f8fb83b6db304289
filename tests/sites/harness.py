"""Two or three whole sites on one machine, linked the way sites are: each its own schemas, bus prefix, stores,
ports and secret; every byte and event between two sites goes through a `SiteLink` the test can cut for real.

A site runs ingest, catalog and transfer in-process (the services site-to-site work needs), or any of them as
`obsflow service NAME` in a process of its own (`start_process`) that a test can SIGKILL: the site's settings go to
it in its environment, as OBSFLOW_* variables. Its peers are declared as a user declares them, `[[peers]]` with URLs
that point at the link's proxies; tokens are issued by each destination's own secret into files, as an operator
would hand them out; the shovels are set up by `obsflow setup`'s own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from pydantic import SecretStr
from yarl import URL

from services.catalog.service import SPEC as CATALOG
from services.ingest.service import SPEC as INGEST
from services.transfer.service import SPEC as TRANSFER
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.bus import publish_event
from shared.events import new_event
from shared.events.types import ObservationAnnounced
from shared.runner import ServiceRunner
from shared.settings import PeerSettings, Settings, StoreSettings
from tests.infra import free_port_block
from tests.private_servers import PrivateRabbitMQ
from tests.sites.link import CutMode, Link

DAY = 86400.0
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0  # a service's process starting on a busy 2-core machine
STOP_GRACE_S = 20.0


@dataclass
class SiteUnderTest:
    """One site: its settings, its running services, the directories a correlator and peers write into."""

    name: str
    settings: Settings
    incoming: Path
    landing: Path
    runners: dict[str, ServiceRunner] = field(default_factory=dict)
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.settings.http_port(service)}"

    def token(self, account: str = "op", role: Role = Role.ADMIN) -> str:
        """A token this site's services accept."""
        return issue_token(site_secret(self.settings), Principal(account, role), DAY)

    async def start(self, *services: str) -> None:
        """Start the named services (ingest, catalog and transfer by default), in that order."""
        specs = {"ingest": INGEST, "catalog": CATALOG, "transfer": TRANSFER}
        for name in services or ("ingest", "catalog", "transfer"):
            runner = ServiceRunner(specs[name], self.settings)
            await runner.start()
            self.runners[name] = runner

    async def stop(self, *services: str) -> None:
        for name in services or [*reversed(self.processes), *reversed(self.runners)]:
            runner = self.runners.pop(name, None)
            if runner is not None:
                await runner.stop()
            await self._terminate(name)

    def log(self, service: str) -> Path:
        """Where the output of `service`'s process goes (appended to, start after start)."""
        return self.landing.parent / f"{service}.log"

    def env(self) -> dict[str, str]:
        """The caller's environment without obsflow settings, plus this site's settings (secrets included) and the
        worktree on PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBSFLOW_")}
        values = self.settings.model_dump(mode="json", exclude_none=True, exclude={"auth_secret"})
        env.update({f"OBSFLOW_{key.upper()}": value if isinstance(value, str) else json.dumps(value)
                    for key, value in values.items()})
        if self.settings.auth_secret is not None:
            env["OBSFLOW_AUTH_SECRET"] = self.settings.auth_secret.get_secret_value()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        return env

    async def start_process(self, service: str) -> None:
        """`obsflow service NAME` in a process of its own, its output appended to `log(service)`; returns once its
        /readyz answers 200."""
        with self.log(service).open("ab") as out:
            self.processes[service] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shared.cli.main", "service", service, env=self.env(), cwd=self.landing.parent,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        await self.wait_ready(service)

    async def wait_ready(self, service: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until `service`'s process answers /readyz with 200; RuntimeError (with its log's end) if it exits or
        does not get there in time."""
        process, deadline = self.processes[service], time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while process.returncode is None and time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url(service)}/readyz") as answer:
                        if answer.status == 200:
                            return
                await asyncio.sleep(0.3)  # a poll interval between checks of a condition
        tail = "\n".join(self.log(service).read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{self.name}'s {service} is not ready (exit status {process.returncode}):\n{tail}")

    async def kill(self, service: str) -> None:
        """SIGKILL `service`'s process (ours, by its pid) and reap it."""
        process = self.processes.pop(service)
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def _terminate(self, service: str) -> None:
        process = self.processes.pop(service, None)
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def fetchval(self, service: str, sql: str, *args: Any) -> Any:
        """One value from `service`'s own schema (through its pool when it runs in-process)."""
        if service in self.runners:
            return await self.runners[service].ctx.pool.fetchval(sql, *args)
        conn = await asyncpg.connect(self.settings.database_url, timeout=10,
                                     server_settings={"search_path": self.settings.schema_for(service)})
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def announce_path(self, channel: aio_pika.abc.AbstractChannel, path: Path) -> None:
        """Announce a file the test wrote beneath `incoming`."""
        exchange = await channel.get_exchange(f"{self.settings.bus.prefix}.events")
        announced = ObservationAnnounced(path=str(path), file_type="uvh5")
        await publish_event(exchange, new_event(announced, site=self.name, producer="correlator"))

    async def announce(self, channel: aio_pika.abc.AbstractChannel, names: Sequence[str], size: int) -> list[Path]:
        """A correlator writes `names` (each `size` bytes, content unique to the file) and announces them."""
        paths = []
        for name in names:
            path = self.incoming / name
            line = f"{self.name} {name}\n".encode()
            path.write_bytes((line * (size // len(line) + 1))[:size])
            await self.announce_path(channel, path)
            paths.append(path)
        return paths


@dataclass
class SiteLink:
    """Everything between two sites: for each direction, the broker (shovels) and the ingest and transfer APIs."""

    ends: frozenset[str]
    proxies: list[Link] = field(default_factory=list)

    def cut(self, mode: CutMode = "reset") -> None:
        """Cut the link both ways: `reset` (connections closed, new ones refused) or `blackhole` (nothing passes)."""
        for proxy in self.proxies:
            proxy.cut(mode)

    def restore(self) -> None:
        for proxy in self.proxies:
            proxy.restore()


@dataclass
class Sites:
    """The sites of a test and the links between every two of them."""

    sites: dict[str, SiteUnderTest]
    links: dict[frozenset[str], SiteLink]

    def __getitem__(self, name: str) -> SiteUnderTest:
        return self.sites[name]

    def link(self, a: str, b: str) -> SiteLink:
        return self.links[frozenset((a, b))]


@contextlib.asynccontextmanager
async def linked_sites(
    base: Settings, tmp: Path, names: Sequence[str], *, via: Mapping[tuple[str, str], str] | None = None,
    manager: str = "http", transfer: Mapping[str, Any] | None = None, stores: Mapping[str, Any] | None = None,
    peer_options: Mapping[str, Any] | None = None,
    peer_overrides: Mapping[tuple[str, str], Mapping[str, Any]] | None = None, broker: PrivateRabbitMQ | None = None,
) -> AsyncIterator[Sites]:
    """Sites `names`, each a peer of every other (`via[(a, b)] = c`: a reaches b through c; `peer_options` more
    fields of every `[[peers]]` entry, `peer_overrides[(a, b)]` of how a declares b), with their shovels set up on
    the broker of `base.amqp_url` (the local node, or `broker`, a private node with the management API, whose URL
    `base.amqp_url` then is); nothing is started (start each site's services in the test). Everything is removed
    afterwards."""
    from tests.sites.links_setup import remove_peer_links, set_up_peer_links

    ports = {name: free_port_block() for name in names}
    links, proxies = await _links(names, ports, URL(base.amqp_url).port or 5672)
    secrets_of = {name: f"test-secret-of-{name}-{secrets.token_hex(24)}" for name in names}
    sites = {}
    for name in names:
        peers = [_peer(base, tmp, name, other, proxies[(name, other)], secrets_of[other], manager, via or {})
                 .model_copy(update={**(peer_options or {}), **(peer_overrides or {}).get((name, other), {})})
                 for other in names if other != name]
        settings = _site_settings(base, tmp / name, name, ports[name], secrets_of[name], peers,
                                  dict((stores or {}).get(name, {})), dict(transfer or {}))
        sites[name] = SiteUnderTest(name, settings, tmp / name / "incoming", tmp / name / "landing")
    try:
        for site in sites.values():
            await set_up_peer_links(site.settings, broker)
        yield Sites(sites, links)
    finally:
        for site in sites.values():
            await site.stop()
        for site in sites.values():
            await remove_peer_links(site.settings, broker)
        for link in links.values():
            for proxy in link.proxies:
                await proxy.stop()


async def _links(
    names: Sequence[str], ports: Mapping[str, int], amqp_port: int
) -> tuple[dict[frozenset[str], SiteLink], dict[tuple[str, str], dict[str, Link]]]:
    """For every ordered pair (a, b): a's way to b's broker, ingest and transfer, each through a proxy of the link."""
    links: dict[frozenset[str], SiteLink] = {}
    proxies: dict[tuple[str, str], dict[str, Link]] = {}
    for a in names:
        for b in (other for other in names if other != a):
            link = links.setdefault(frozenset((a, b)), SiteLink(frozenset((a, b))))
            ends = {"amqp": Link(amqp_port), "ingest": Link(ports[b]), "transfer": Link(ports[b] + 2)}
            for proxy in ends.values():
                await proxy.start()
                link.proxies.append(proxy)
            proxies[(a, b)] = ends
    return links, proxies


def _peer(
    base: Settings, tmp: Path, name: str, other: str, ends: Mapping[str, Link], other_secret: str, manager: str,
    via: Mapping[tuple[str, str], str],
) -> PeerSettings:
    """`other` as `name` declares it: through the link, with a token `other`'s secret signed (as its operator would
    hand one out) and the broker password in a file."""
    peers = tmp / name / "peers"
    peers.mkdir(parents=True, exist_ok=True)
    token_file, password_file = peers / f"{other}.token", peers / f"{other}.amqp"
    signer = base.model_copy(update={"auth_secret": SecretStr(other_secret)})
    token_file.write_text(issue_token(site_secret(signer), Principal(f"{name}-peer", Role.READ_APPEND), DAY))
    password_file.write_text("guest")
    return PeerSettings(
        name=other, amqp_url=f"amqp://guest@127.0.0.1:{ends['amqp'].port}/", amqp_password_file=password_file,
        bus_prefix=f"{base.bus.prefix}-{other}", http_url=f"http://127.0.0.1:{ends['ingest'].port}",
        transfer_url=f"http://127.0.0.1:{ends['transfer'].port}", token_file=token_file, manager=manager,
        landing_dir=tmp / other / "landing", via=via.get((name, other)),
    )


def _site_settings(
    base: Settings, root: Path, name: str, port: int, secret: str, peers: list[PeerSettings],
    store: dict[str, Any], transfer: dict[str, Any],
) -> Settings:
    for directory in ("store", "incoming", "landing", "var"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    return base.model_copy(update={
        "site": name, "schema_prefix": f"{base.site}_{name}",
        "bus": base.bus.model_copy(update={"prefix": f"{base.bus.prefix}-{name}"}),
        "http_base_port": port, "auth_secret": SecretStr(secret), "data_dir": root / "var",
        "db_pool_size": 6,  # three sites of three services share the machine's PostgreSQL with other tests
        "stores": [StoreSettings(name="main", root=root / "store", **store)], "peers": peers,
        "services": {
            "ingest": {"source_roots": [str(root / "incoming"), str(root / "landing")]},
            "catalog": {"session_quiet_period_s": 3600.0},
            "transfer": {"evaluation_interval_s": 0.1, "dispatch_interval_s": 0.1, "backoff_base_s": 0.5,
                         "backoff_cap_s": 2.0, **transfer},
        },
    })
