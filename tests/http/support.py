"""Hostile request bodies, and a raw HTTP/1.1 client that can send half a request and stall."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    """A request body an attacker (or a broken client) sends, and the status the body parser answers."""

    name: str
    body: bytes
    status: int
    content_type: str | None = "application/json"


HOSTILE_BODIES = (
    Hostile("5000-level array", b"[" * 5000 + b"]" * 5000, 400),
    Hostile("5000-level object", b'{"a":' * 5000 + b"1" + b"}" * 5000, 400),
    Hostile("100000 opening brackets", b"[" * 100_000, 400),
    Hostile("5000-digit integer", b'{"size": ' + b"9" * 5000 + b"}", 400),
    Hostile("bare 5000-digit integer", b"9" * 5000, 400),
    Hostile("invalid UTF-8", b'{"name": "\xff\xfe"}', 400),
    Hostile("lone surrogate", b'{"name": "\\ud800"}', 400),
    Hostile("NaN", b'{"size": NaN}', 400),
    Hostile("array where an object is expected", b'[{"name": "a"}]', 400),
    Hostile("string where an object is expected", b'"name"', 400),
    Hostile("null", b"null", 400),
    Hostile("not JSON", b"{not json", 400),
    Hostile("empty body", b"", 400),
    Hostile("whitespace only", b"  \r\n", 400),
    Hostile("wrong Content-Type", json.dumps({"name": "a"}).encode(), 415, "text/plain"),
    Hostile("form Content-Type", b"name=a", 415, "application/x-www-form-urlencoded"),
    Hostile("a charset other than UTF-8", b'{"name": "a"}', 415, "application/json; charset=latin-1"),
    Hostile("oversize body", b'{"pad": "' + b"x" * (2 * MiB) + b'"}', 413),
)


@dataclass
class RawResponse:
    """What came back on a raw connection (status 0: the server closed it without answering)."""

    status: int
    head: str
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


async def raw_request(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b"",
    declared_length: int | None = None, timeout_s: float = 30.0,
) -> RawResponse:
    """Send a request whose Content-Length may promise more than `body` (then it stalls), and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = len(body) if declared_length is None else declared_length
        # Connection: close lets the server close first, so the TIME_WAIT is on its port and not on one of the
        # ephemeral ports that tests.infra.free_port_block hands out next.
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {length}",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            response = await _read_response(reader)
            await reader.read()  # until the server closes
            return response
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> RawResponse:
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    except asyncio.IncompleteReadError:
        return RawResponse(0, "", b"")
    status = int(head.split(" ", 2)[1])
    length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                   if line.lower().startswith("content-length:")), 0)
    return RawResponse(status, head, await reader.readexactly(length))
