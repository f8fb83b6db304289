"""The client's event subscriptions (the implementation `obsflow events tail` uses): live by pattern, replayed from
a point in the log, resumed from an offset, and refusals."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.client import InvalidStart, ObsflowClient, Site, stream_start
from shared.errors import BrokerUnavailable, ConfigurationError
from shared.events import Event
from tests.client.site import ClientSite, minted
from tests.infra import free_port_block

pytestmark = pytest.mark.asyncio(loop_scope="package")


def _events(site: str, file_type: str, count: int) -> list[Event]:
    return [minted(2459400.3 + i * 0.00018, site=site, file_type=file_type) for i in range(count)]


async def _take(events, count: int) -> list[Event]:
    taken: list[Event] = []
    async with asyncio.timeout(30):
        async for event in events:
            taken.append(event)
            if len(taken) == count:
                return taken
    raise AssertionError("the subscription ended")


async def test_live_subscription_gets_exactly_what_its_pattern_selects(client_site: ClientSite) -> None:
    wanted, other = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    site = client_site.settings.site
    async with client_site.client() as client, client.subscribe(f"{site}.file.minted.{wanted}") as events:
        mine, theirs = _events(site, wanted, 3), _events(site, other, 3)
        await client_site.publish(*[e for pair in zip(mine, theirs, strict=True) for e in pair])
        assert [e.event_id for e in await _take(events, 3)] == [e.event_id for e in mine]
        sentinel = _events(site, wanted, 1)
        await client_site.publish(sentinel[0])
        assert [e.event_id for e in await _take(events, 1)] == [sentinel[0].event_id]  # nothing else came between


async def test_replay_from_the_log_then_resume_from_an_offset(client_site: ClientSite) -> None:
    kind = f"t{uuid.uuid4().hex[:8]}"
    site = client_site.settings.site
    published = _events(site, kind, 4)
    await client_site.publish(*published)
    async with client_site.client() as client:
        async with client.subscribe(f"*.file.minted.{kind}", start="first") as events:
            first_two = await _take(events, 2)
            resume_at = events.last_offset
        assert [e.event_id for e in first_two] == [e.event_id for e in published[:2]]
        assert resume_at is not None
        async with client.subscribe(f"*.file.minted.{kind}", start=resume_at + 1) as events:
            rest = await _take(events, 2)
        assert [e.event_id for e in rest] == [e.event_id for e in published[2:]]
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        async with client.subscribe(f"*.file.minted.{kind}", start=an_hour_ago) as events:
            assert [e.event_id for e in await _take(events, 4)] == [e.event_id for e in published]


async def test_points_in_the_log() -> None:
    assert [stream_start(v) for v in ("first", "last", "next", "2h", "1D", 17)] == ["first", "last", "next", "2h",
                                                                                    "1D", 17]
    assert stream_start("2026-11-21T18:00:00Z") == datetime(2026, 11, 21, 18, tzinfo=UTC)
    assert stream_start("2026-11-21T18:00:00") == datetime(2026, 11, 21, 18, tzinfo=UTC)
    for bad in ("yesterday", "2026-13-01", -1, True, "2x"):
        with pytest.raises(InvalidStart):
            stream_start(bad)  # type: ignore[arg-type]


async def test_subscriptions_that_cannot_be_made_say_why(client_site: ClientSite, unique: str) -> None:
    site = client_site.site
    missing_bus = Site(site.ingest, site.catalog, site.scheduler, amqp_url=site.amqp_url, bus_prefix=unique)
    for start in (None, "first"):
        with pytest.raises(ConfigurationError, match=rf"this site's bus \({unique}.events, {unique}.log\) does not"):
            async with ObsflowClient(missing_bus, None).subscribe("#", start=start):
                pass
    no_broker = Site(site.ingest, site.catalog, site.scheduler, amqp_url=f"amqp://guest:guest@127.0.0.1:"
                     f"{free_port_block()}/")
    with pytest.raises(BrokerUnavailable, match="cannot reach RabbitMQ"):
        async with ObsflowClient(no_broker, None).subscribe("#"):
            pass
    no_url = Site(site.ingest, site.catalog, site.scheduler, amqp_problem="no amqp credentials for 'reader' at /x")
    with pytest.raises(ConfigurationError, match="no amqp credentials for 'reader'"):
        ObsflowClient(no_url, None).subscribe("#")
