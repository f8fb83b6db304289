"""Fuzzing the JSON body parser: whatever the bytes, a parsed object or the parser's own 4xx, nothing else.

Bounded in time: a few thousand examples of the pure parser, a few hundred through a real aiohttp server.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.http.body import BodyLimits, decode_object, json_object
from shared.http.errors import HttpRefusal, error_middleware

LIMITS = BodyLimits(max_bytes=4096, max_depth=8)
REFUSALS = {400: "invalid_body", 413: "body_too_large"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Arbitrary bytes, and bytes that are nearly JSON (a valid document cut, spliced or with bytes flipped).
nearly_json = st.builds(
    lambda value, cut, noise: json.dumps(value).encode()[:cut] + noise,
    json_values, st.integers(min_value=0, max_value=200), st.binary(max_size=8),
)
deep = st.builds(lambda depth, opener: opener * depth, st.integers(min_value=1, max_value=3000),
                 st.sampled_from([b"[", b'{"a":', b"[{", b'{"":[']))
bodies = st.binary(max_size=6000) | nearly_json | deep


@settings(max_examples=1000, deadline=None, database=None)
@given(bodies)
def test_any_bytes_give_an_object_or_the_parsers_refusal(data: bytes) -> None:
    try:
        value = decode_object(data, LIMITS)
    except HttpRefusal as e:
        assert REFUSALS[e.status] == e.code and str(e)
    else:
        assert isinstance(value, dict)


@settings(max_examples=1000, deadline=None, database=None)
@given(json_values)
def test_every_object_within_the_limits_is_parsed_as_itself(value: object) -> None:
    data = json.dumps({"v": value}).encode()
    if len(data) <= LIMITS.max_bytes and _depth(value) + 1 <= LIMITS.max_depth:
        assert decode_object(data, LIMITS) == json.loads(data)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@pytest.fixture(scope="module")
def server_port() -> object:
    """An aiohttp app with the error middleware and one endpoint that echoes the parsed object."""
    loop = asyncio.new_event_loop()

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await json_object(request))

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/echo", echo)
    client = TestClient(TestServer(app), loop=loop)
    loop.run_until_complete(client.start_server())
    yield loop, client
    loop.run_until_complete(client.close())
    loop.close()


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=bodies, content_type=st.sampled_from(["application/json", "application/geo+json",
                                                   "application/json; charset=utf-8", "text/plain", None]))
def test_any_body_through_a_server_gives_200_or_a_4xx_with_an_error_object(server_port, data, content_type) -> None:
    loop, client = server_port
    headers = {"Content-Type": content_type} if content_type else {}

    async def post() -> tuple[int, object]:
        async with client.post("/echo", data=data, headers=headers,
                               skip_auto_headers=() if content_type else ("Content-Type",)) as response:
            return response.status, await response.json(content_type=None)

    status, answer = loop.run_until_complete(post())
    if status == 200:
        assert isinstance(answer, dict)
    else:
        assert status in (400, 413, 415) and isinstance(answer, dict), (status, answer)
        assert set(answer["error"]) == {"code", "message"}
