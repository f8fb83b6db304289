"""Three sites, karoo → nrao → penn, with karoo's link to penn declared thin (penn is reached via nrao): one order to
each offsite site sends each file over karoo's link once; nrao sends it on to penn from its own verified copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings
from tests.conftest import wait_for
from tests.sites.harness import linked_sites
from tests.sites.test_replication import count_at_least, create_order, names, transfers_listed

pytestmark = [pytest.mark.usefixtures("drop_schemas"), pytest.mark.timeout(600)]
FILES = 60
DEADLINE_S = 240.0


async def test_one_order_to_two_offsite_sites_crosses_the_thin_link_once(settings: Settings, amqp,
                                                                          tmp_path: Path) -> None:
    async with linked_sites(settings, tmp_path, ["karoo", "nrao", "penn"], via={("karoo", "penn"): "nrao"}) as sites:
        karoo, nrao, penn = sites["karoo"], sites["nrao"], sites["penn"]
        for site in (penn, nrao, karoo):
            await site.start()
        for destination in ("nrao", "penn"):
            await create_order(karoo, {"search": {"file_type": {"is": "uvh5"}}, "destination": destination})
        await karoo.announce(await amqp.channel(), names(FILES), 8192)

        instances = "SELECT count(*) FROM instances"
        await wait_for(lambda: count_at_least(penn, "ingest", instances, FILES), DEADLINE_S)
        await wait_for(lambda: count_at_least(nrao, "ingest", instances, FILES), DEADLINE_S)
        at_penn = "SELECT count(*) FROM instances WHERE site = 'penn'"
        await wait_for(lambda: count_at_least(karoo, "catalog", at_penn, FILES), DEADLINE_S)

        # karoo never sent a byte to penn; each file crossed its link once, to nrao.
        assert await karoo.fetchval("transfer", "SELECT count(*) FROM batches WHERE peer = 'penn'") == 0
        assert await karoo.fetchval(
            "transfer", "SELECT count(DISTINCT a.file_name) FROM attempts a JOIN batches b USING (batch_id)"
            " WHERE b.peer = 'nrao' AND a.outcome = 'delivered'") == FILES
        # A batch sends a file once for all the transfers it carries (to nrao, and through nrao to penn).
        sent_twice = ("SELECT count(*) FROM (SELECT a.file_name FROM attempts a JOIN batches b USING (batch_id)"
                      " WHERE a.outcome = 'delivered' GROUP BY a.file_name, b.peer"
                      " HAVING count(DISTINCT a.batch_id) > 1) twice")
        assert await karoo.fetchval("transfer", sent_twice) == 0
        # nrao sent each one on to penn, because karoo asked it to.
        assert await nrao.fetchval(
            "transfer", "SELECT count(*) FROM transfers WHERE destination = 'penn' AND requested_by = 'karoo-peer'"
            " AND delivered_at IS NOT NULL") == FILES
        assert await nrao.fetchval("transfer", sent_twice) == 0
        # penn holds one verified copy of each, with karoo's metadata; nrao's and penn's are recorded at karoo.
        assert await penn.fetchval("ingest", "SELECT count(DISTINCT file_name) FROM instances") == FILES
        assert await penn.fetchval("ingest", "SELECT count(*) FROM files WHERE origin_site = 'karoo'") == FILES
        assert await karoo.fetchval("catalog", "SELECT count(*) FROM instances WHERE site = 'nrao'") == FILES
        done = await transfers_listed(karoo, "/api/v1/transfers?state=done&limit=1000")
        assert sorted({(t["destination"]) for t in done["transfers"]}) == ["nrao", "penn"]
        assert len(done["transfers"]) == 2 * FILES
