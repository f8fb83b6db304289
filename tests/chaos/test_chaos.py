"""The chaos soak, short: about a minute of faults (services SIGKILLed, RabbitMQ and PostgreSQL restarted, garbage
published) during an ingest of a few hundred files, then every invariant checked (docs/chaos.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.chaos.site import ChaosSite
from tests.chaos.soak import SoakPlan, run_soak

pytestmark = pytest.mark.timeout(900)  # ~1 min of faults, start-up and settling on a busy 2-core machine


@pytest.fixture
async def chaos_site() -> AsyncIterator[ChaosSite]:
    site = ChaosSite()
    try:
        yield site
    finally:
        await site.stop()
        site.close(keep=False)


async def test_every_invariant_holds_after_a_minute_of_faults(chaos_site: ChaosSite) -> None:
    report = await run_soak(SoakPlan(duration_s=60, files=300, seed=20261130, settle_timeout_s=240), chaos_site)
    failing = {name: check for name, check in report["invariants"].items() if not check["ok"]}
    chaos_site.keep = bool(failing)  # the services' logs stay for whoever looks into it
    assert not failing, (
        f"invariants broken after the faults: {json.dumps(failing, indent=1)}\n"
        f"faults: {report['faults']}\nservice errors: {report['service_errors_logged']}\n"
        f"the services' logs: {chaos_site.directory}\n{chaos_site.log_tails(list(chaos_site.services), 8)}"
    )
    faults = report["faults"]
    # The soak did what it says: each kind of fault happened, during a real load.
    assert faults.get("service_kill", 0) >= 2 and faults.get("broker_restart", 0) >= 1, faults
    assert faults.get("database_restart", 0) >= 1 and faults.get("garbage", 0) >= 5, faults
    assert report["files"] == {"announced": 240, "uploaded": 60, "minted": 300}, report["files"]
