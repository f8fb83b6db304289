"""The catalog's HTTP API against a running service: reads, search pages and errors, close, roles."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from services.catalog.routes import PREFIX, ROUTE_TABLE
from shared.auth import Role
from tests.catalog.catalog_harness import (
    NIGHT_1,
    NIGHT_2,
    catalog_settings,
    delete_topology,
    instance_created,
    minted,
    night,
    publish,
    running_catalog,
    token,
)

pytestmark = pytest.mark.usefixtures("drop_schemas")


class Api:
    """A tiny JSON client of one running catalog."""

    def __init__(self, session: aiohttp.ClientSession, base: str, bearer: str | None) -> None:
        self.session, self.base, self.bearer = session, base, bearer

    async def call(self, method: str, path: str, body: Any = None, bearer: str | None = "") -> tuple[int, Any]:
        bearer = self.bearer if bearer == "" else bearer
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def test_api_reads_search_close_and_roles(settings, amqp) -> None:
    settings = catalog_settings(settings, session_sweep_interval_s=3600)
    files = [minted(jd) for jd in night(NIGHT_1, 12) + night(NIGHT_2, 3)]
    name = files[0].payload.name  # type: ignore[attr-defined]
    copies = [instance_created(name, settings.site, "/a"), instance_created(name, "nrao", "/b")]
    try:
        async with running_catalog(settings) as runner, aiohttp.ClientSession() as session:
            await publish(amqp, settings, files + copies)
            await runner.parts.stream_consumers[0].drain()
            base = f"http://127.0.0.1:{settings.http_port('catalog')}{PREFIX}"
            api = Api(session, base, token(settings, Role.READ_ONLY))
            await _reads(api, name, settings.site)
            await _search(api)
            await _close(api, token(settings, Role.ADMIN))
            await _roles(api, settings)
    finally:
        await delete_topology(settings)


async def _reads(api: Api, name: str, site: str) -> None:
    status, body = await api.call("GET", f"/files/{name}")
    assert status == 200 and body["name"] == name and body["n_instances"] == 2
    assert body["instance_sites"] == sorted([site, "nrao"]) and body["created_at"].startswith("2020-09-30")
    status, body = await api.call("GET", "/files?recent=5")
    assert status == 200 and len(body["results"]) == 5
    status, body = await api.call("GET", f"/files/{name}/instances")
    assert status == 200 and [(i["site"], i["local"]) for i in body["instances"]] == [(site, True), ("nrao", False)]
    status, body = await api.call("GET", f"/observations/zen.{NIGHT_1:.5f}")
    assert status == 200 and body["session_id"] == f"{NIGHT_1:.5f}" and body["files"] == [name]
    status, body = await api.call("GET", "/sessions")
    assert status == 200 and [s["session_id"] for s in body["results"]] == [f"{NIGHT_2:.5f}", f"{NIGHT_1:.5f}"]
    status, body = await api.call("GET", f"/sessions/{NIGHT_1:.5f}")
    assert status == 200 and (body["n_observations"], body["n_files"], body["status"]) == (12, 12, "open")
    for path in ("/files/nope", "/files/nope/instances", "/observations/nope", "/sessions/nope", "/no/such/thing"):
        status, body = await api.call("GET", path)
        assert status == 404 and body["error"]["code"] == "not_found", path
    status, body = await api.call("GET", "/files?recent=0")
    assert status == 400 and "recent" in body["error"]["message"]


async def _search(api: Api) -> None:
    query = {"and": [{"name": {"matches": f"zen.{int(NIGHT_1)}.%"}}, {"instances": {">=": 0}}]}
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        status, page = await api.call("POST", "/search", {"target": "files", "query": query, "limit": 4,
                                                          **({"cursor": cursor} if cursor else {})})
        assert status == 200
        seen += [r["name"] for r in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 15 and seen == sorted(seen)  # pages never overlap, in start_jd order
    status, page = await api.call("POST", "/search", {"target": "sessions", "query": {"status": {"is": "open"}}})
    assert status == 200 and len(page["results"]) == 2 and page["next_cursor"] is None
    status, body = await api.call("POST", "/search", {"target": "files", "query": {"and": [{"size": {">": "big"}}]}})
    assert status == 400 and body["error"]["code"] == "invalid_search" and body["error"]["path"] == '$.and[0].size[">"]'
    for bad in ({"target": "planets"}, {"query": {}, "colour": "red"}, {"limit": 0}):
        status, body = await api.call("POST", "/search", bad)
        assert status == 400 and body["error"]["code"] == "invalid_search", bad
    async with api.session.post(api.base + "/search", data=b"{not json", headers={
            "Authorization": f"Bearer {api.bearer}", "Content-Type": "application/json"}) as response:
        assert response.status == 400
    async with api.session.post(api.base + "/search", data=b"{}",  # aiohttp sends bytes as octet-stream
                                headers={"Authorization": f"Bearer {api.bearer}"}) as response:
        assert response.status == 415


async def _close(api: Api, admin: str) -> None:
    status, body = await api.call("POST", f"/sessions/{NIGHT_2:.5f}/close", bearer=admin)
    assert status == 200 and body["files"] == 3 and body["closed_at"]
    status, body = await api.call("POST", f"/sessions/{NIGHT_2:.5f}/close", bearer=admin)
    assert status == 409 and body["error"]["code"] == "already_closed"
    status, body = await api.call("POST", "/sessions/nope/close", bearer=admin)
    assert status == 404
    status, body = await api.call("GET", f"/sessions/{NIGHT_2:.5f}")
    assert body["status"] == "closed"


async def _roles(api: Api, settings) -> None:
    status, doc = await api.call("GET", "/openapi.json", bearer=None)  # the description is public
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {PREFIX + path for _m, path, _h, _r in ROUTE_TABLE} <= set(doc["paths"])  # tests/api checks all of it
    for method, path, _handler, minimum in ROUTE_TABLE:
        url = path.format(name="x", observation_id="x", session_id="x")
        body = {} if method == "POST" else None
        status, answer = await api.call(method, url, body, bearer=None)
        assert status == 401 and answer["error"]["code"] == "unauthenticated", (method, path)
        below = Role(minimum - 1)
        status, answer = await api.call(method, url, body, bearer=token(settings, below))
        assert status == 403 and answer["error"]["code"] == "forbidden", (method, path, below)
    status, _ = await api.call("GET", "/sessions", bearer="obsflow.forged.token")
    assert status == 401
