"""The soak's load: observations announced the way an instrument announces them, and files uploaded over HTTP, both
going on through every outage (the publisher and the harness retry)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from yarl import URL

from shared import credentials
from shared.auth import Principal, Role, issue_token
from shared.bus.publisher import ConfirmedPublisher
from shared.bus.topology import Topology
from shared.client import ObsflowClient
from shared.client.errors import ClientError, ServerUnavailable
from shared.errors import BrokerUnavailable
from shared.events import Event, new_event
from shared.events.types import ObservationAnnounced
from shared.failures import describe
from shared.settings import Settings

log = structlog.get_logger()

UPLOAD_CLIENTS = 4
UPLOAD_RETRY_S = 0.5


@dataclass(frozen=True)
class SourceFile:
    """A small file the load puts into the site: its name there and its size."""

    name: str
    path: Path
    size: int


def write_source(path: Path, rng: random.Random) -> SourceFile:
    """A file of 1-16 KiB whose bytes no other file has (blocking)."""
    size = rng.randrange(1024, 16 * 1024)
    body = path.name.encode().ljust(64, b".") + rng.randbytes(size - 64)
    path.write_bytes(body)
    return SourceFile(path.name, path, size)


@dataclass
class LoadReport:
    """What the load did, for the invariants and the soak's report."""

    announced: list[SourceFile] = field(default_factory=list)
    uploaded: list[SourceFile] = field(default_factory=list)  # each minted, as its upload's answer said
    upload_attempts_failed: Counter[str] = field(default_factory=Counter)  # by what the client saw
    upload_wrong_answers: list[str] = field(default_factory=list)  # 4xx, or 5xx other than 503: bugs
    publisher_failures: list[str] = field(default_factory=list)  # a publisher that gave up (it must not)
    publisher_reconnects: int = 0


class Announcer:
    """Writes observations under the site's source root and announces each with a ConfirmedPublisher."""

    def __init__(self, settings: Settings, report: LoadReport) -> None:
        self._settings = settings
        self._report = report
        self._url = credentials.amqp_url(settings, "instrument")
        self._events: list[Event] = []
        self._publisher: ConfirmedPublisher | None = None
        self.directory = Path(settings.data_dir) / "incoming" / "chaos"

    @property
    def announced_ids(self) -> set[str]:
        """The event ids of every announcement made."""
        return {str(e.event_id) for e in self._events}

    async def run(self, count: int, until: float, rng: random.Random) -> None:
        """Announce `count` observations spread evenly until the monotonic time `until`, then flush."""
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        self._publisher = self._new_publisher()
        start = time.monotonic()
        interval = max(0.0, until - start) / max(1, count)
        for index in range(count):
            path = self.directory / f"obs.{index:06d}.uvh5"
            source = await asyncio.to_thread(write_source, path, rng)
            payload = ObservationAnnounced(path=str(path), file_type="uvh5", expected_size=source.size)
            event = new_event(payload, site=self._settings.site, producer="chaos-correlator")
            self._events.append(event)
            self._report.announced.append(source)
            await self._publish(event)
            await asyncio.sleep(max(0.0, start + (index + 1) * interval - time.monotonic()))

    async def flush(self, timeout_s: float) -> None:
        """Wait until the broker has confirmed every announcement (re-sending them if the publisher gave up)."""
        deadline = time.monotonic() + timeout_s
        while self._publisher is not None:
            try:
                await self._publisher.close(max(1.0, deadline - time.monotonic()))
                self._report.publisher_reconnects += self._publisher.reconnects
                self._publisher = None
            except BrokerUnavailable as e:
                if time.monotonic() > deadline:
                    raise
                await self._publisher_failed(e)

    async def _publish(self, event: Event) -> None:
        try:
            await self._current().publish(event)
        except BrokerUnavailable as e:
            await self._publisher_failed(e)  # the new publisher sends this event too

    def _current(self) -> ConfirmedPublisher:
        if self._publisher is None:
            raise RuntimeError("the announcer was flushed already")
        return self._publisher

    async def _publisher_failed(self, error: BrokerUnavailable) -> None:
        """A publisher gave up (a bug: outages are to be ridden through): recorded; a new one sends every
        announcement again, with the same ids (ingest must mint each file once all the same)."""
        self._report.publisher_failures.append(describe(error.__cause__ or error))
        log.error("chaos_publisher_failed", error=describe(error.__cause__ or error))
        if self._publisher is not None:
            self._report.publisher_reconnects += self._publisher.reconnects
        self._publisher = self._new_publisher()
        for event in self._events:
            await self._publisher.publish(event)

    def _new_publisher(self) -> ConfirmedPublisher:
        publisher = ConfirmedPublisher(self._url, Topology.from_settings(self._settings.bus),
                                       user_id=URL(self._url).user, max_buffered=1_000_000)
        publisher.start()
        return publisher


class Uploader:
    """Uploads files through the client with a read-append token; a failed attempt is retried (and counted)."""

    def __init__(self, settings: Settings, secret: str, report: LoadReport, directory: Path) -> None:
        self._settings = settings
        self._token = issue_token(secret, Principal("chaos-uploader", Role.READ_APPEND), 24 * 3600)
        self._report = report
        self.directory = directory

    async def run(self, count: int, until: float, rng: random.Random, stop_retrying_at: float) -> None:
        """Upload `count` files spread evenly until `until`, UPLOAD_CLIENTS at a time."""
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        sources = [await asyncio.to_thread(write_source, self.directory / f"up.{i:06d}.dat", rng)
                   for i in range(count)]
        gate = asyncio.Semaphore(UPLOAD_CLIENTS)
        start = time.monotonic()
        interval = max(0.0, until - start) / max(1, count)
        async with ObsflowClient(f"http://127.0.0.1:{self._settings.http_port('ingest')}", self._token) as client:

            async def one(index: int, source: SourceFile) -> None:
                await asyncio.sleep(max(0.0, start + index * interval - time.monotonic()))
                async with gate:
                    await self._upload(client, source, stop_retrying_at)

            await asyncio.gather(*(one(i, s) for i, s in enumerate(sources)))

    async def _upload(self, client: ObsflowClient, source: SourceFile, stop_retrying_at: float) -> None:
        while True:
            try:
                answer = await client.upload(source.path, file_type="dat", name=source.name)
            except ServerUnavailable as e:
                self._report.upload_attempts_failed[f"unavailable {e.status or 'unreachable'}"] += 1
            except ClientError as e:  # a 500, or a refusal of a good upload: a wrong answer (a bug), retried
                self._report.upload_attempts_failed[f"{e.status} {e.code}"] += 1
                self._report.upload_wrong_answers.append(f"{source.name}: {e}")
            else:
                if answer.name != source.name or answer.size != source.size:
                    raise AssertionError(f"uploading {source.name} minted {answer.name} ({answer.size} bytes)")
                self._report.uploaded.append(source)
                return
            if time.monotonic() > stop_retrying_at:
                raise TimeoutError(f"{source.name} was still not uploaded when the soak's deadline passed")
            await asyncio.sleep(UPLOAD_RETRY_S)  # between attempts, as a client's retry would wait

