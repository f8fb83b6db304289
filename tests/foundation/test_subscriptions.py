"""Scientists' topic subscriptions: a bound queue and `obsflow events tail` select exactly what they ask for."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime

import aio_pika
import pytest

from shared.bus import publish_event
from shared.events import Event, decode_event, new_event
from shared.events.types import InstanceCreated, JobDone
from tests.conftest import wait_for
from tests.foundation.support import minted
from tests.infra import backends


def _mixed_events() -> list[Event]:
    events: list[Event] = []
    for i in range(12):
        m = minted(i, site="karoo" if i % 3 else "nrao", file_type="uvh5" if i % 2 else "hdf5")
        events.append(m)
        events.append(new_event(
            InstanceCreated(file_name=m.payload.name, site=m.site, store="main", path=f"/d/{i}",  # type: ignore[attr-defined]
                            size=1, checksum="xxh3-128:00", verified_at=datetime.now(UTC)),
            site=m.site, producer="ingest",
        ))
        events.append(new_event(
            JobDone(run_id="r", job_id=f"j{i}", action="XRFI", files=[], exit_status=0, duration_s=1.0),
            site="karoo", producer="scheduler",
        ))
    return events


async def test_queue_bound_to_minted_pattern_receives_exactly_the_minted_events(amqp, topology) -> None:
    channel = await amqp.channel()
    scientist = await channel.declare_queue(exclusive=True)
    await scientist.bind(topology.events_exchange, routing_key="*.file.minted.#")
    received: list[Event] = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        received.append(decode_event(message.body))
        await message.ack()

    await scientist.consume(on_message)
    exchange = await channel.get_exchange(topology.events_exchange)
    events = _mixed_events()
    for event in events:
        await publish_event(exchange, event)
    expected = [e.event_id for e in events if e.type == "file.minted"]
    await wait_for(lambda: len(received) >= len(expected))
    # Whatever else was published is already routed (one channel, in order): nothing more may arrive.
    sentinel = minted(999)
    await publish_event(exchange, sentinel)
    await wait_for(lambda: len(received) >= len(expected) + 1)
    assert [e.event_id for e in received] == [*expected, sentinel.event_id]
    assert {e.type for e in received} == {"file.minted"}


async def test_events_tail_replays_the_log_by_pattern(amqp, topology, settings) -> None:
    channel = await amqp.channel()
    exchange = await channel.get_exchange(topology.events_exchange)
    events = _mixed_events()
    for event in events:
        await publish_event(exchange, event)
    wanted = [e for e in events if e.site == "karoo" and e.type == "file.minted"]
    env = {**os.environ, "OBSFLOW_AMQP_URL": settings.amqp_url, "OBSFLOW_BUS__PREFIX": topology.prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", "events", "tail", "karoo.file.minted.*", "--from", "first",
        "--limit", str(len(wanted)), "--json", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [line["event_id"] for line in lines] == [str(e.event_id) for e in wanted]


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01"])
async def test_events_tail_refuses_a_bad_start_with_a_clear_message(bad: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", "events", "tail", "#", "--from", bad,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert f"--from {bad!r} is not 'first', 'last', an ISO time or an interval like 2h" in err.decode()
    assert "Traceback" not in err.decode()


async def test_events_tail_on_a_site_whose_bus_does_not_exist_says_what_to_do(unique: str) -> None:
    env = {**os.environ, "OBSFLOW_BUS__PREFIX": unique, "OBSFLOW_AMQP_URL": backends().amqp_url}
    for extra in ([], ["--from", "first"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli.main", "events", "tail", "#", *extra, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2
        assert f"this site's bus ({unique}.events, {unique}.log) does not exist yet" in err.decode()
        assert "Traceback" not in err.decode()
