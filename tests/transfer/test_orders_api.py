"""The standing orders API against the real services (the transfer service and this site's catalog, in-process):
create, list, show, pause, resume, delete; refusals that store nothing; roles."""

from __future__ import annotations

import aiohttp
import pytest

from services.transfer.routes import PREFIX
from shared.auth import Role
from shared.settings import Settings
from tests.catalog.catalog_harness import delete_topology, running_catalog, token
from tests.transfer.harness import PEER, Api, running_transfer, transfer_settings

pytestmark = pytest.mark.usefixtures("drop_schemas")
ORDER = {"search": {"file_type": {"is": "uvh5"}}, "destination": PEER, "label": "raw data to nrao", "priority": 5}


async def _order_rows(runner) -> int:
    return await runner.ctx.pool.fetchval("SELECT count(*) FROM orders")


async def test_orders_lifecycle_and_roles(settings: Settings) -> None:
    settings = transfer_settings(settings)
    try:
        async with running_catalog(settings), running_transfer(settings), aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{settings.http_port('transfer')}{PREFIX}"
            admin = Api(session, base, token(settings, Role.ADMIN))
            reader = Api(session, base, token(settings, Role.READ_ONLY))
            order_id = await _create_list_show(admin, reader)
            await _pause_resume(admin, order_id)
            await _roles(admin, reader, order_id)
            await _delete(admin, reader, order_id)
    finally:
        await delete_topology(settings)


async def _create_list_show(admin: Api, reader: Api) -> str:
    status, body, _ = await admin.call("POST", "/orders", ORDER)
    assert status == 201, body
    assert (body["destination"], body["label"], body["priority"], body["search"]) == (
        PEER, ORDER["label"], 5, ORDER["search"])
    assert body["paused"] is False and body["store"] is None and body["manager"] is None
    assert body["created_by"] == "test-admin"
    status, second, _ = await admin.call("POST", "/orders", {"search": {}, "destination": PEER, "store": "main",
                                                             "manager": "local"})
    assert status == 201 and (second["store"], second["manager"], second["priority"]) == ("main", "local", 0)
    status, listing, _ = await reader.call("GET", "/orders")
    assert status == 200 and [o["order_id"] for o in listing["orders"]] == [body["order_id"], second["order_id"]]
    status, shown, _ = await reader.call("GET", f"/orders/{body['order_id']}")
    assert status == 200 and shown == body
    status, missing, _ = await reader.call("GET", "/orders/order-nope")
    assert status == 404 and missing["error"]["code"] == "not_found" and "order-nope" in missing["error"]["message"]
    return str(body["order_id"])


async def _pause_resume(admin: Api, order_id: str) -> None:
    status, paused, _ = await admin.call("POST", f"/orders/{order_id}/pause")
    assert status == 200 and paused["paused"] is True and paused["paused_at"] is not None
    status, again, _ = await admin.call("POST", f"/orders/{order_id}/pause")
    assert status == 200 and again["paused_at"] == paused["paused_at"]  # idempotent: paused since the first pause
    status, shown, _ = await admin.call("GET", f"/orders/{order_id}")
    assert shown["paused"] is True
    for _ in range(2):
        status, resumed, _ = await admin.call("POST", f"/orders/{order_id}/resume")
        assert status == 200 and resumed["paused"] is False and resumed["paused_at"] is None
    status, body, _ = await admin.call("POST", "/orders/order-nope/pause")
    assert status == 404 and body["error"]["code"] == "not_found"


async def _roles(admin: Api, reader: Api, order_id: str) -> None:
    for method, path in (("POST", "/orders"), ("POST", f"/orders/{order_id}/pause"),
                         ("POST", f"/orders/{order_id}/resume"), ("DELETE", f"/orders/{order_id}")):
        status, body, _ = await reader.call(method, path, ORDER if path == "/orders" else None)
        assert status == 403 and "needs admin" in body["error"]["message"], (method, path)
        status, body, _ = await admin.call(method, path, bearer=None)
        assert status == 401, (method, path)
    status, body, _ = await reader.call("GET", "/orders", bearer=None)
    assert status == 401
    status, shown, _ = await reader.call("GET", f"/orders/{order_id}")
    assert status == 200 and shown["paused"] is False  # the refused pause changed nothing


async def _delete(admin: Api, reader: Api, order_id: str) -> None:
    status, deleted, _ = await admin.call("DELETE", f"/orders/{order_id}")
    assert status == 200 and deleted["order_id"] == order_id and deleted["deleted_at"] is not None
    for method, path in (("GET", f"/orders/{order_id}"), ("DELETE", f"/orders/{order_id}"),
                         ("POST", f"/orders/{order_id}/pause"), ("POST", f"/orders/{order_id}/resume")):
        status, body, _ = await admin.call(method, path)
        assert status == 404 and body["error"]["code"] == "not_found", (method, path)
    status, listing, _ = await reader.call("GET", "/orders")
    assert order_id not in [o["order_id"] for o in listing["orders"]] and len(listing["orders"]) == 1


async def test_refused_orders_store_nothing(settings: Settings) -> None:
    settings = transfer_settings(settings)
    try:
        async with running_catalog(settings), running_transfer(settings) as runner, \
                aiohttp.ClientSession() as session:
            admin = Api(session, f"http://127.0.0.1:{settings.http_port('transfer')}{PREFIX}",
                        token(settings, Role.ADMIN))
            catalog = Api(session, f"http://127.0.0.1:{settings.http_port('catalog')}/api/v1",
                          token(settings, Role.READ_ONLY))
            bad_search = {"size": {">": "big"}}
            _, said, _ = await catalog.call("POST", "/search", {"target": "files", "query": bad_search})
            status, body, _ = await admin.call("POST", "/orders", {**ORDER, "search": bad_search})
            assert status == 400 and body["error"] == said["error"]  # the catalog's own code, message and path
            assert body["error"]["code"] == "invalid_search" and body["error"]["path"] == '$.size[">"]'
            status, body, _ = await admin.call("POST", "/orders", {**ORDER, "search": {"colour": {"is": "red"}}})
            assert status == 400 and "unknown clause 'colour'" in body["error"]["message"]

            status, body, _ = await admin.call("POST", "/orders", {**ORDER, "destination": "penn"})
            assert status == 400 and body["error"]["code"] == "unknown_destination"
            assert "'penn' is not a declared peer" in body["error"]["message"] and PEER in body["error"]["message"]
            status, body, _ = await admin.call("POST", "/orders", {**ORDER, "destination": settings.site})
            assert status == 400 and body["error"]["code"] == "unknown_destination" and "this site" in \
                body["error"]["message"]
            for bad in ({"label": "x" * 201}, {"priority": 1001}, {"priority": True}, {"manager": "ftp"},
                        {"store": "../etc"}, {"search": ["not", "an", "object"]}, {"colour": "red"},
                        {"search": {"name": {"in": ["x" * 1000] * 70}}},
                        {"manager": "globus"}):  # a manager this site has not configured
                status, body, _ = await admin.call("POST", "/orders", {**ORDER, **bad})
                assert status == 400 and body["error"]["code"] == "invalid_order", (bad, body)
            status, body, _ = await admin.call("POST", "/orders", {"destination": PEER})
            assert status == 400 and '"search"' in body["error"]["message"]
            assert await _order_rows(runner) == 0
        # The catalog stopped: the search cannot be checked, so nothing is stored and the caller is told to retry.
        async with running_transfer(settings) as runner, aiohttp.ClientSession() as session:
            admin = Api(session, f"http://127.0.0.1:{settings.http_port('transfer')}{PREFIX}",
                        token(settings, Role.ADMIN))
            status, body, headers = await admin.call("POST", "/orders", ORDER)
            assert status == 503 and body["error"]["code"] == "unavailable" and int(headers["Retry-After"]) > 0
            assert "catalog" in body["error"]["message"]
            assert await _order_rows(runner) == 0
    finally:
        await delete_topology(settings)
