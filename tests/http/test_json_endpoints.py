"""No JSON endpoint of any service answers 500 to its body: every hostile body gets the body parser's 4xx.

The routes come from each running service's own router, so a new POST route cannot be forgotten: it must be
listed below as taking a JSON object or as taking no body.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.bus import Topology
from shared.runner import ServiceRunner, load_spec
from shared.settings import SERVICES, Settings, StoreSettings
from tests.http.support import HOSTILE_BODIES, Hostile, raw_request
from tests.infra import free_port_block

pytestmark = pytest.mark.usefixtures("drop_schemas", "delete_topology")

# Routes whose body is one JSON object (optional: an empty body means {}).
TAKES_OBJECT = {
    ("ingest", "/api/v1/uploads"): False,
    ("ingest", "/api/v1/uploads/local"): False,
    ("catalog", "/api/v1/search"): False,
    ("scheduler", "/api/v1/workflows"): False,
    ("scheduler", "/api/v1/runs"): False,
    ("scheduler", "/api/v1/runs/{run_id}/retry"): True,
    ("ingest", "/api/v1/replicas"): False,
    ("ingest", "/api/v1/replicas/local"): False,
    ("transfer", "/api/v1/orders"): False,
    ("transfer", "/api/v1/forwards"): False,
}
TOKENS = "/api/v1/tokens"  # every service serves it
TAKES_NO_BODY = {("catalog", "/api/v1/sessions/{session_id}/close"), ("transfer", "/api/v1/orders/{order_id}/pause"),
                 ("transfer", "/api/v1/orders/{order_id}/resume")}
READ_TIMEOUT_S = 1.0


@pytest.fixture
async def delete_topology(settings: Settings) -> AsyncIterator[None]:
    """The services declare the test site's topology: delete it afterwards."""
    yield
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection, connection.channel() as channel:
        await Topology(prefix=settings.bus.prefix).delete(channel)


@pytest.fixture
async def service(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> AsyncIterator[ServiceRunner]:
    name = request.param
    (tmp_path / "store").mkdir()
    (tmp_path / "scripts").mkdir()
    s = settings.model_copy(update={
        "http_base_port": free_port_block(), "data_dir": tmp_path / "var", "http_read_timeout_s": READ_TIMEOUT_S,
        "stores": [StoreSettings(name="main", root=tmp_path / "store")],
        # The scheduler starts only with script roots, and as root only when local jobs may run as root.
        "services": {"scheduler": {"script_roots": [str(tmp_path / "scripts")],
                                   "backend_options": {"local": {"allow_root": True}}}},
    })
    runner = ServiceRunner(load_spec(name), s)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


def _json_routes(runner: ServiceRunner) -> list[tuple[str, bool]]:
    """(path, optional) of every route taking a JSON object; fails on a POST route nobody classified."""
    app = runner._http_runner.app  # type: ignore[union-attr]
    name = runner.spec.name
    found = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method not in ("POST", "PATCH", "PUT") or (route.method == "PUT" and "/uploads/" in path):
            continue  # the upload PUT streams raw bytes (tested with the ingest service)
        if path == TOKENS:
            found.append((path, False))
        elif (name, path) in TAKES_OBJECT:
            found.append((path, TAKES_OBJECT[(name, path)]))
        else:
            assert (name, path) in TAKES_NO_BODY, f"{route.method} {path} of {name} is not classified: add it above"
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "no-such-id", path)


@pytest.mark.parametrize("service", SERVICES, indirect=True)
async def test_hostile_bodies_get_the_parsers_4xx_on_every_json_endpoint(service: ServiceRunner) -> None:
    port = service.settings.http_port(service.spec.name)
    bearer = issue_token(site_secret(service.settings), Principal("root", Role.ADMIN), 600)
    routes = _json_routes(service)
    assert routes
    for path, optional in routes:
        for hostile in HOSTILE_BODIES:
            headers = {"Authorization": f"Bearer {bearer}"}
            if hostile.content_type:
                headers["Content-Type"] = hostile.content_type
            answer = await raw_request(port, "POST", _concrete(path), headers=headers, body=hostile.body)
            assert answer.status < 500, (path, hostile.name, answer.body[:300])
            if optional and not hostile.body.strip():
                continue  # an empty body is {} here: the handler goes on (to a 404 for the unknown run)
            _assert_refused(answer.json(), answer.status, hostile, path)


def _assert_refused(body: dict, status: int, hostile: Hostile, path: str) -> None:
    codes = {400: "invalid_body", 413: "body_too_large", 415: "unsupported_media_type"}
    assert status == hostile.status, (path, hostile.name, body)
    assert body["error"]["code"] == codes[status] and body["error"]["message"], (path, hostile.name, body)


@pytest.mark.parametrize("service", ["ingest", "catalog", "scheduler"], indirect=True)
async def test_a_body_that_stops_arriving_is_408_after_the_read_timeout(service: ServiceRunner) -> None:
    port = service.settings.http_port(service.spec.name)
    bearer = issue_token(site_secret(service.settings), Principal("root", Role.ADMIN), 600)
    for path, _optional in _json_routes(service):
        started = time.monotonic()
        answer = await raw_request(
            port, "POST", _concrete(path), body=b'{"name": "zen.', declared_length=400,
            headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
        )
        waited = time.monotonic() - started
        assert answer.status == 408 and answer.json()["error"]["code"] == "body_timeout", path
        assert READ_TIMEOUT_S <= waited < READ_TIMEOUT_S + 5, (path, waited)


@pytest.mark.parametrize("service", ["catalog"], indirect=True)
async def test_an_oversize_chunked_body_is_413_without_reading_it_all(service: ServiceRunner) -> None:
    port = service.settings.http_port("catalog")
    bearer = issue_token(site_secret(service.settings), Principal("root", Role.READ_ONLY), 600)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /api/v1/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/json\r\nAuthorization: Bearer " + bearer.encode() + b"\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(20):  # 1.25 MiB: over the 1 MiB limit
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        async with asyncio.timeout(20):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head
    finally:
        writer.close()
