"""The JSON body parser's contract on a plain aiohttp app: what it accepts, and the 4xx for what it does not."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.http.body import BODY_LIMITS, BodyLimits, json_object
from shared.http.errors import error_middleware
from tests.http.support import raw_request


async def _app(limits: BodyLimits) -> TestClient:  # type: ignore[type-arg]
    async def required(request: web.Request) -> web.Response:
        return web.json_response(await json_object(request))

    async def optional(request: web.Request) -> web.Response:
        return web.json_response(await json_object(request, optional=True))

    app = web.Application(middlewares=[error_middleware])
    app[BODY_LIMITS] = limits
    app.router.add_post("/required", required)
    app.router.add_post("/optional", optional)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_what_is_accepted() -> None:
    client = await _app(BodyLimits())
    try:
        for content_type in ("application/json", "application/JSON; charset=UTF-8", "application/merge-patch+json",
                             None):
            headers = {"Content-Type": content_type} if content_type else {}
            skip = () if content_type else ("Content-Type",)
            async with client.post("/required", data=b' {"a": [1, {"b": null}]} ', headers=headers,
                                   skip_auto_headers=skip) as response:
                assert response.status == 200 and await response.json() == {"a": [1, {"b": None}]}, content_type
        async with client.post("/optional") as response:
            assert response.status == 200 and await response.json() == {}
        async with client.post("/optional", json={"failed_only": False}) as response:
            assert await response.json() == {"failed_only": False}
        async with client.post("/required") as response:
            assert response.status == 400 and "empty" in (await response.json())["error"]["message"]
    finally:
        await client.close()


async def test_limits_come_from_the_app_and_a_stalled_body_is_closed_after_408() -> None:
    client = await _app(BodyLimits(max_bytes=100, max_depth=3, read_timeout_s=0.5, total_timeout_s=30))
    try:
        async with client.post("/required", json={"pad": "x" * 100}) as response:
            assert response.status == 413 and (await response.json())["error"]["code"] == "body_too_large"
        async with client.post("/required", json={"a": {"b": {"c": {}}}}) as response:
            body = await response.json()
            assert response.status == 400 and "nested 4 levels deep; at most 3" in body["error"]["message"]
        started = time.monotonic()
        answer = await raw_request(client.port, "POST", "/required", body=b'{"a": ', declared_length=50,
                                   headers={"Content-Type": "application/json"})
        assert answer.status == 408 and "Connection: close" in answer.head
        assert time.monotonic() - started < 5  # answered and closed at once, not after aiohttp's lingering time
    finally:
        await client.close()


async def test_a_trickling_body_is_408_after_the_total_timeout() -> None:
    client = await _app(BodyLimits(read_timeout_s=5, total_timeout_s=1))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"POST /required HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000"
                     b"\r\n\r\n{")
        async with asyncio.timeout(20):
            while not reader.at_eof():  # a byte every 0.2 s: each read is in time, the whole is not
                writer.write(b" ")
                await writer.drain()
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.2)
                    break
                except TimeoutError:
                    continue
        assert head.startswith(b"HTTP/1.1 408")
    finally:
        writer.close()
        await client.close()
