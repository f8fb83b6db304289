"""Request bodies: the one JSON body parser of every service, bounded in size, depth and time.

Whatever a client sends, a JSON endpoint answers with its own result or one of these, never a 500 (the error
middleware renders them as `{"error": {"code", "message"}}`):

| status | code | when |
|---|---|---|
| 400 | `invalid_body` | empty (when required), not UTF-8, not JSON, too deep, a number out of range, not an object |
| 408 | `body_timeout` | no byte of the body for `read_timeout_s`, or the whole body not within `total_timeout_s` |
| 413 | `body_too_large` | more than `max_bytes` declared (Content-Length) or sent |
| 415 | `unsupported_media_type` | a Content-Type not `application/json` (or `application/*+json`), not UTF-8 |

Streaming endpoints (uploads) read with `body_chunks`/`read_chunk`, which apply the same per-read timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from shared.bounded_json import JsonRefused, parse_bounded
from shared.http.errors import HttpRefusal

MiB = 1024 * 1024
# Deep enough for the catalog's search trees (32 clause levels, two JSON levels each); far below orjson's 1024.
MAX_DEPTH = 100
READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class BodyLimits:
    """How much, how deep and how slowly a client may send a body (one per app, from settings)."""

    max_bytes: int = MiB
    max_depth: int = MAX_DEPTH
    read_timeout_s: float = 30.0  # the longest pause between two reads of any body, uploads included
    total_timeout_s: float = 60.0  # a JSON body as a whole (uploads are bounded by their per-read timeout only)


BODY_LIMITS = web.AppKey("obsflow_body_limits", BodyLimits)
_DEFAULT_LIMITS = BodyLimits()


def body_limits(request: web.Request) -> BodyLimits:
    """The limits of the app serving `request` (the defaults when the app set none)."""
    return request.config_dict.get(BODY_LIMITS, _DEFAULT_LIMITS)


def _too_large(limits: BodyLimits) -> HttpRefusal:
    return HttpRefusal(413, "body_too_large", f"the request body is larger than {limits.max_bytes} bytes, the most "
                       "this endpoint accepts")


def _timed_out(limits: BodyLimits) -> HttpRefusal:
    return HttpRefusal(408, "body_timeout", f"the request body stopped arriving (no byte for {limits.read_timeout_s:g} "
                       "s); send the whole body without pausing")


async def read_chunk(request: web.Request, size: int = READ_BYTES) -> bytes:
    """Up to `size` more bytes of the body (b"" at its end); 408 when none arrive within the per-read timeout."""
    limits = body_limits(request)
    try:
        async with asyncio.timeout(limits.read_timeout_s):
            return await request.content.read(size)
    except TimeoutError:
        raise _timed_out(limits) from None


async def body_chunks(request: web.Request, size: int = READ_BYTES) -> AsyncIterator[bytes]:
    """The body in chunks of at most `size` bytes, each read under the per-read timeout (408 on a stall)."""
    while chunk := await read_chunk(request, size):
        yield chunk


async def read_body(request: web.Request) -> bytes:
    """The whole body, at most `max_bytes` (413 beyond), within the per-read and total timeouts (408)."""
    limits = body_limits(request)
    too_large = _too_large(limits)
    declared = request.content_length
    if declared is not None and declared > limits.max_bytes:
        raise too_large
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(limits.total_timeout_s):
            async for chunk in body_chunks(request):
                received += len(chunk)
                if received > limits.max_bytes:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise HttpRefusal(408, "body_timeout", f"the request body took longer than {limits.total_timeout_s:g} s "
                          "to arrive; send it at once") from None
    return b"".join(chunks)


def _check_content_type(request: web.Request) -> None:
    if hdrs.CONTENT_TYPE not in request.headers:
        return  # undeclared: parsed as JSON, and refused if it is not
    mime = request.content_type
    if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
        raise HttpRefusal(415, "unsupported_media_type",
                          f"this endpoint takes JSON; send 'Content-Type: application/json' (got {mime!r})")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise HttpRefusal(415, "unsupported_media_type", f"JSON bodies are UTF-8; got charset {charset!r}")


async def json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object; `{}` for an empty body when `optional`; HttpRefusal (400/408/413/415) otherwise."""
    if not request.body_exists:  # no body at all: say so, whatever Content-Type came with it
        return decode_object(b"", body_limits(request), optional=optional)
    _check_content_type(request)
    return decode_object(await read_body(request), body_limits(request), optional=optional)


def decode_object(data: bytes, limits: BodyLimits, *, optional: bool = False) -> dict[str, Any]:
    """`data` parsed as one JSON object within `limits`; HttpRefusal 400 (413 when too large) for anything else."""
    if len(data) > limits.max_bytes:
        raise _too_large(limits)
    if not data.strip(b" \t\r\n"):
        if optional:
            return {}
        raise HttpRefusal(400, "invalid_body", "the request body is empty; this endpoint takes a JSON object")
    try:
        value = parse_bounded(data, max_bytes=limits.max_bytes, max_depth=limits.max_depth, what="the request body")
    except JsonRefused as e:
        raise HttpRefusal(400, "invalid_body", str(e)) from None
    if not isinstance(value, dict):
        raise HttpRefusal(400, "invalid_body",
                          f"the request body must be a JSON object ({{...}}), not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
