"""`obsflow orders ...` and `obsflow transfers [stuck]` as a person runs them (a process of their own) against the
real transfer service and catalog: tables, --json, and errors as one line without a traceback."""

from __future__ import annotations

import json

import pytest

from services.transfer import repository
from services.transfer.repository import Result
from shared.auth import Role
from shared.settings import Settings
from tests.catalog.catalog_harness import delete_topology, running_catalog, token
from tests.cli.support import Ran, obsflow
from tests.transfer.harness import PEER, running_transfer, transfer_settings

pytestmark = pytest.mark.usefixtures("drop_schemas")


def _refused(ran: Ran, *words: str) -> None:
    lines = ran.err.strip().splitlines()
    assert ran.code == 2 and ran.no_traceback and len(lines) == 1 and lines[0].startswith("obsflow: "), ran
    for word in words:
        assert word in lines[0], (word, ran.err)


async def test_orders_and_transfers_commands(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = transfer_settings(settings, max_attempts=2)
    monkeypatch.delenv("OBSFLOW_CONFIG_FILE", raising=False)
    env = {"OBSFLOW_HTTP_BASE_PORT": str(settings.http_base_port), "OBSFLOW_TOKEN": token(settings, Role.ADMIN),
           "OBSFLOW_SITE": settings.site, "OBSFLOW_DATA_DIR": str(settings.data_dir)}
    try:
        async with running_catalog(settings), running_transfer(settings) as runner:
            created = await obsflow("orders", "create", "--search", '{"file_type": {"is": "uvh5"}}', "--to", PEER,
                                    "--priority", "3", "--label", "raw", "--manager", "http", "--json", env=env)
            assert created.code == 0, created
            order = json.loads(created.out)
            assert (order["destination"], order["priority"], order["label"], order["manager"]) == (PEER, 3, "raw",
                                                                                                   "http")
            order_id = order["order_id"]
            listed = await obsflow("orders", "list", env=env)
            header, row = listed.out.splitlines()[:2]
            assert header.split()[:4] == ["ORDER", "STATE", "DESTINATION", "PRIORITY"]
            assert row.split()[:4] == [order_id, "active", PEER, "3"]
            paused = await obsflow("orders", "pause", order_id, env=env)
            assert paused.code == 0 and paused.out.strip() == f"order {order_id} paused"
            shown = await obsflow("orders", "show", order_id, env=env)
            assert shown.code == 0 and "paused" in shown.out and '{"file_type": {"is": "uvh5"}}' in shown.out
            resumed = await obsflow("orders", "resume", order_id, "--json", env=env)
            assert resumed.code == 0 and json.loads(resumed.out)["paused"] is False

            _refused(await obsflow("orders", "create", "--search", '{"size": {">": "big"}}', "--to", PEER, env=env),
                     "whole number", '$.size[">"]', "invalid_search")
            _refused(await obsflow("orders", "create", "--search", "{oops", "--to", PEER, env=env),
                     "--search is not JSON")
            _refused(await obsflow("orders", "create", "--search", "{}", "--to", "penn", env=env),
                     "not a declared peer", PEER)
            _refused(await obsflow("orders", "pause", order_id, env={**env, "OBSFLOW_TOKEN": token(settings,
                                                                                                  Role.READ_ONLY)}),
                     "needs admin")

            async with runner.ctx.pool.acquire() as conn:  # type: ignore[union-attr]
                await repository.want_transfers(conn, [(n, PEER, order_id, 0) for n in ("zen.a.uvh5", "zen.b.uvh5")])
                await repository.start_batch(conn, "b1", PEER, "http", [("zen.b.uvh5", PEER)])
                await repository.finish_batch(conn, "b1", [Result("zen.b.uvh5", PEER, "failed", "peer away")],
                                              retry_delays_s=[300.0])
            table = await obsflow("transfers", env=env)
            lines = table.out.splitlines()
            assert table.code == 0 and lines[0].split()[:4] == ["FILE", "DESTINATION", "STATE", "ATTEMPTS"]
            assert [line.split()[:4] for line in lines[1:]] == [["zen.a.uvh5", PEER, "queued", "0/2"],
                                                                 ["zen.b.uvh5", PEER, "queued", "1/2"]]
            paged = await obsflow("transfers", "--limit", "1", env=env)
            assert paged.code == 0 and "--after " in paged.err and "zen.b.uvh5" not in paged.out
            after = paged.err.split("--after ")[1].split(")")[0]
            rest = await obsflow("transfers", "--limit", "1", "--after", after, "--json", env=env)
            assert [t["file_name"] for t in json.loads(rest.out)["transfers"]] == ["zen.b.uvh5"]
            stuck = await obsflow("transfers", "stuck", "--to", PEER, env=env)
            assert stuck.code == 0 and "zen.b.uvh5" in stuck.out and "peer away" in stuck.out
            assert "zen.a.uvh5" not in stuck.out
            done = await obsflow("transfers", "--state", "done", env=env)
            assert done.code == 0 and done.out.strip() == "(no transfers)"

            deleted = await obsflow("orders", "delete", order_id, env=env)
            assert deleted.code == 0 and deleted.out.strip() == f"order {order_id} deleted"
            _refused(await obsflow("orders", "show", order_id, env=env), "no standing order", "404")
        _refused(await obsflow("orders", "list", env=env), "cannot reach the transfer service")
    finally:
        await delete_topology(settings)
