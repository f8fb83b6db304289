"""A night at the telescope, end to end with the real services: the correlator announces 200 observations over two
nights; ingest mints each once with a verified instance; the catalog groups them into two sessions and closes each
once; the scheduler runs the registered nightly workflow once per session."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import aiohttp
import pytest

from services.catalog.service import SPEC as CATALOG
from services.ingest.service import SPEC as INGEST
from services.scheduler.service import SPEC as SCHEDULER
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.bus import Topology, publish_event
from shared.events import new_event
from shared.events.types import ObservationAnnounced
from shared.runner import ServiceRunner
from shared.settings import StoreSettings
from tests.conftest import wait_for
from tests.infra import free_port_block

pytestmark = [pytest.mark.usefixtures("drop_schemas"), pytest.mark.timeout(900)]
NIGHTS = (2459122.30000, 2459123.30000)
PER_NIGHT = 100
STEP = 0.00018
# How long each stage may take: generous, for a 2-core machine shared by many test runs (alone, the whole test takes
# under 10 s). A stage that is done returns at once; these only bound how long a failure takes to be reported.
MINT_TIMEOUT_S = 300.0
CLOSE_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 300.0

WORKFLOW = """\
[Options]
makeflow_type = "analysis"
path_to_do_scripts = "{scripts}"
base_mem = 10
base_cpu = 1
default_queue = "hera"
timeout = "60"
obsflow_input_dir = "{store}"

[WorkFlow]
actions = ["COUNT"]

[COUNT]
chunk_size = "all"
args = ["{{obsid_list}}"]
"""


async def test_two_nights_from_announcement_to_nightly_run(settings, amqp, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "do_COUNT.sh").write_text('#!/bin/bash\nset -e\necho "$#" >> nights.txt\n')
    (scripts / "do_COUNT.sh").chmod(0o755)
    site = settings.model_copy(update={
        "stores": [StoreSettings(name="main", root=store)], "data_dir": tmp_path / "var",
        "http_base_port": free_port_block(),
        "services": {
            "catalog": {"session_quiet_period_s": 1.0, "session_sweep_interval_s": 0.3},
            # Scripts run only from script roots; local jobs as root only because the tests run as root.
            "scheduler": {"poll_interval_s": 0.1, "script_roots": [str(scripts)],
                          "backend_options": {"local": {"allow_root": True}}},
        },
    })
    ingest, scheduler = ServiceRunner(INGEST, site), ServiceRunner(SCHEDULER, site)
    catalog = ServiceRunner(CATALOG, site)
    runners = [ingest, scheduler]
    try:
        for runner in runners:
            await runner.start()
        headers = {"Authorization": f"Bearer {issue_token(site_secret(site), Principal('op', Role.ADMIN), 600)}"}
        config = WORKFLOW.format(scripts=scripts, store=store / "main")
        async with aiohttp.ClientSession(headers=headers) as http:
            url = f"http://127.0.0.1:{site.http_port('scheduler')}/api/v1/workflows"
            body = {"name": "nightly", "config_text": config, "trigger": "session.closed"}
            async with http.post(url, json=body) as r:
                assert r.status == 201, await r.text()

        correlator = tmp_path / "var" / "incoming"  # the site's default source root, made by ingest at start-up
        channel = await amqp.channel()
        exchange = await channel.get_exchange(f"{site.bus.prefix}.events")
        for start in NIGHTS:
            for i in range(PER_NIGHT):
                path = correlator / f"zen.{start + i * STEP:.5f}.sum.uvh5"
                path.write_bytes(f"visibilities {path.name}\n".encode() * 64)
                announced = ObservationAnnounced(path=str(path), file_type="uvh5")
                await publish_event(exchange, new_event(announced, site=site.site, producer="correlator"))
                if i % 10 == 0:  # the correlator announces some observations twice
                    await publish_event(exchange, new_event(announced, site=site.site, producer="correlator"))

        files = "SELECT count(*) FROM files"
        published = "SELECT count(*) FROM outbox WHERE event_type = 'file.minted' AND published_at IS NOT NULL"
        await _until("every observation minted and its event on the log", ingest, published, 200, MINT_TIMEOUT_S)
        # A session closes once no observation has come for its quiet period (1 s), measured between the minting
        # events. Under load ingest can leave gaps longer than that inside a night, and a catalog reading live would
        # close the night early and start a second session for the rest. The catalog starts now, as after a
        # restart: both nights are on the log, and its sweep drains the log before it decides, so each night is
        # whole when it closes, however slow the machine.
        runners.append(catalog)
        await catalog.start()
        closed = "SELECT count(*) FROM sessions WHERE closed_at IS NOT NULL"
        await _until("both nights' sessions closed", catalog, closed, 2, CLOSE_TIMEOUT_S)
        finished = "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL"
        await _until("both nightly runs finished", scheduler, finished, 2, RUN_TIMEOUT_S)

        assert await _count(ingest, files) == 200
        assert await ingest.ctx.pool.fetchval("SELECT count(*) FROM instances") == 200
        minted = await ingest.ctx.pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'file.minted'")
        assert minted == 200  # once each, although 20 were announced twice
        sessions = await catalog.ctx.pool.fetch("SELECT start_jd, end_jd, n_observations FROM sessions ORDER BY 1")
        assert [(round(s["start_jd"], 5), s["n_observations"]) for s in sessions] == [(n, 100) for n in NIGHTS]
        emitted = await catalog.ctx.pool.fetch("SELECT body FROM outbox WHERE event_type = 'session.closed'")
        assert len(emitted) == 2  # once per session
        runs = await scheduler.ctx.pool.fetch("SELECT input_files FROM runs ORDER BY created_at")
        assert len(runs) == 2
        # Each night's run saw that night's 100 files, in time order.
        nights_txt = [p.read_text().split() for p in (tmp_path / "var" / "scheduler").glob("*/nights.txt")]
        assert sorted(nights_txt) == [["100"], ["100"]]
    finally:
        for runner in reversed(runners):
            await runner.stop()
        async with amqp.channel() as ch:
            await Topology(prefix=site.bus.prefix, work_queues=INGEST.work_queues).delete(ch)


async def _count(runner: ServiceRunner, sql: str) -> int:
    assert runner.ctx is not None
    return int(await runner.ctx.pool.fetchval(sql))


async def _until(stage: str, runner: ServiceRunner, sql: str, expected: int, timeout_s: float) -> None:
    """Wait until `sql` counts at least `expected` (more is reported by the assertions after); fail naming the
    stage and how far it got, rather than running into the test's own timeout."""
    try:
        await wait_for(lambda: _at_least(_count(runner, sql), expected), timeout_s=timeout_s, poll_s=0.2)
    except TimeoutError:
        pytest.fail(f"{stage}: {await _count(runner, sql)} of {expected} after {timeout_s:.0f} s ({sql})")


async def _at_least(count: Awaitable[int], expected: int) -> bool:
    return await count >= expected
