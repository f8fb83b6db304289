"""Every way an HTTP PUT can fail, and the one rule for what is left: nothing staged, and the pending upload kept
(send it again with the same id) unless its claim can never succeed (a different file took the name).

Also: zero-byte files are files, and an idle client is let go after the per-read timeout (`http_read_timeout_s`).
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import xxhash

from shared.auth import Principal, Role, issue_token
from shared.client import ObsflowClient
from shared.runner import ServiceRunner
from tests.conftest import wait_for
from tests.ingest.service_support import (
    announce,
    announcement,
    counts,
    incoming_beside,
    ingest_settings,
    outbox_events,
    rejection_codes,
    running_ingest,
    staged_entries,
    write_file,
)

pytestmark = pytest.mark.usefixtures("drop_schemas")
NAME = "zen.2459122.30000.sum.uvh5"
MiB = 1024 * 1024
READ_TIMEOUT_S = 0.5


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
async def ingest(settings, store_root: Path) -> AsyncIterator[ServiceRunner]:
    quick = settings.model_copy(update={"http_read_timeout_s": READ_TIMEOUT_S})
    async with running_ingest(ingest_settings(quick, store_root)) as runner:
        yield runner


def _xxh3(data: bytes) -> str:
    return f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"


def _token(runner: ServiceRunner, account: str = "alice") -> str:
    secret = runner.settings.auth_secret.get_secret_value()  # type: ignore[union-attr]
    return issue_token(secret, Principal(account, Role.READ_APPEND), 3600)


def _client(runner: ServiceRunner, account: str = "alice") -> ObsflowClient:
    return ObsflowClient(f"http://127.0.0.1:{runner.settings.http_port('ingest')}", _token(runner, account))


async def _put(runner: ServiceRunner, url: str, data: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    """PUT `data` (bytes, or an async iterator of chunks: sent chunked) to an upload URL as alice."""
    full = f"http://127.0.0.1:{runner.settings.http_port('ingest')}{url}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {_token(runner)}"}) as session, \
            session.put(full, data=data, headers=headers) as response:
        return response.status, await response.json()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _pending_ids(runner: ServiceRunner) -> list[str]:
    return [r["upload_id"] for r in await runner.ctx.pool.fetch("SELECT upload_id FROM uploads")]


async def test_a_zero_byte_file_is_minted_by_every_way_in(
    ingest: ServiceRunner, settings, amqp, tmp_path: Path, store_root: Path
) -> None:
    empty = write_file(tmp_path / NAME, b"")
    async with _client(ingest) as client:
        document = await client.upload(empty, file_type="uvh5")  # Content-Length: 0
        assert document.size == 0 and document.checksum == _xxh3(b"")
        chunked = await client.announce("zen.2459122.30001.sum.uvh5", 0, _xxh3(b""), "uvh5")
        status, body = await _put(ingest, chunked.url, _chunks())  # chunked, no chunk at all
        assert status == 201 and body["file"]["size"] == 0
        local = await client.upload_local(write_file(incoming_beside(store_root) / "zen.2459122.30002.sum.uvh5", b""),
                                          file_type="uvh5")
        assert local.size == 0
    announced = write_file(incoming_beside(store_root) / "zen.2459122.30003.sum.uvh5", b"")
    await announce(amqp, settings, announcement(announced, site=settings.site, expected_size=0,
                                                expected_checksum=_xxh3(b"")))
    await ingest.parts.work_consumers[0].drain(timeout_s=30)
    assert await counts(ingest.ctx.pool) == (4, 4, 0)
    assert (store_root / "main" / NAME).read_bytes() == b""
    assert staged_entries(store_root) == []
    assert await rejection_codes(ingest.ctx.pool) == []


async def _wrong_checksum(runner: ServiceRunner, url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    return await _put(runner, url, bytes(b ^ 1 for b in data))


async def _wrong_length_header(runner: ServiceRunner, url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    return await _put(runner, url, data + b"!")


async def _longer_chunked(runner: ServiceRunner, url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    return await _put(runner, url, _chunks(data, b"and more"))


async def _shorter_chunked(runner: ServiceRunner, url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    return await _put(runner, url, _chunks(data[:-1]))


Failure = Callable[[ServiceRunner, str, bytes], Awaitable[tuple[int, dict[str, Any]]]]


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (_wrong_checksum, 422, "checksum_mismatch"),
        (_wrong_length_header, 422, "size_mismatch"),
        (_longer_chunked, 422, "size_mismatch"),
        (_shorter_chunked, 422, "size_mismatch"),
    ],
)
async def test_a_failed_transfer_leaves_the_upload_pending_and_nothing_staged(
    ingest: ServiceRunner, store_root: Path, failure: Failure, status: int, code: str
) -> None:
    data = os.urandom(1000)
    async with _client(ingest) as client:
        announced = await client.announce(NAME, len(data), _xxh3(data), "uvh5")
    got, body = await failure(ingest, announced.url, data)
    assert (got, body["error"]["code"]) == (status, code)
    assert await _pending_ids(ingest) == [announced.upload_id]
    assert await counts(ingest.ctx.pool) == (0, 0, 1) and staged_entries(store_root) == []
    assert await rejection_codes(ingest.ctx.pool) == [code]
    got, body = await _put(ingest, announced.url, data)  # the same id, the right bytes
    assert got == 201 and body["file"]["checksum"] == _xxh3(data)
    assert await counts(ingest.ctx.pool) == (1, 1, 0) and staged_entries(store_root) == []


async def test_a_claim_that_can_never_succeed_ends_the_upload(ingest: ServiceRunner, store_root: Path) -> None:
    mine, theirs = b"alice's bytes", b"bob's other bytes"
    async with _client(ingest) as alice, _client(ingest, "bob") as bob:
        announced = await alice.announce(NAME, len(mine), _xxh3(mine), "uvh5")
        await bob.upload(write_file(store_root.parent / "bob" / NAME, theirs), file_type="uvh5")
    got, body = await _put(ingest, announced.url, mine)
    assert (got, body["error"]["code"]) == (409, "name_conflict")
    assert await counts(ingest.ctx.pool) == (1, 1, 0) and staged_entries(store_root) == []
    got, body = await _put(ingest, announced.url, mine)
    assert (got, body["error"]["code"]) == (404, "unknown_upload")


async def _send_then_idle(runner: ServiceRunner, url: str, length: int, sent: bytes) -> tuple[bytes, float]:
    """Send a PUT's head and `sent` of its `length` body bytes, then nothing: what the server answers, and after how
    long the connection closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", runner.settings.http_port("ingest"))
    head = (f"PUT {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
            f"Authorization: Bearer {_token(runner)}\r\n\r\n")
    writer.write(head.encode() + sent)
    await writer.drain()
    started = time.monotonic()
    try:
        answer = await asyncio.wait_for(reader.read(), 30)  # until the server closes the connection
    finally:
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize(("size", "sent"), [(1000, 0), (1000, 400), (6 * MiB, 5 * MiB)],
                         ids=["nothing-sent", "small-body", "streamed-body"])
async def test_an_idle_client_is_let_go_and_the_upload_stays_retryable(
    ingest: ServiceRunner, store_root: Path, size: int, sent: int
) -> None:
    data = os.urandom(size)
    async with _client(ingest) as client:
        announced = await client.announce(NAME, size, _xxh3(data), "uvh5")
    answer, waited = await _send_then_idle(ingest, announced.url, size, data[:sent])
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"body_timeout"' in answer and b"still pending" in answer
    # Closed once a read waited READ_TIMEOUT_S, not after aiohttp's lingering read (10 s) or a client's patience.
    assert waited < READ_TIMEOUT_S + 5, waited
    assert await counts(ingest.ctx.pool) == (0, 0, 1)
    await wait_for(lambda: staged_entries(store_root) == [], timeout_s=10)
    got, body = await _put(ingest, announced.url, io.BytesIO(data))
    assert got == 201 and body["file"]["size"] == size
    assert await counts(ingest.ctx.pool) == (1, 1, 0) and staged_entries(store_root) == []
    assert len(await outbox_events(ingest.ctx.pool, "file.minted")) == 1


async def test_no_room_at_the_mint_leaves_the_upload_pending(settings, store_root: Path) -> None:
    data = os.urandom(10_000)
    async with running_ingest(ingest_settings(settings, store_root, capacity_bytes=20_000)) as ingest, \
            _client(ingest) as client:
        announced = await client.announce(NAME, len(data), _xxh3(data), "uvh5")
    # The operator lowers the capacity below what is reserved: the mint must not take the store past it.
    async with running_ingest(ingest_settings(settings, store_root, capacity_bytes=5_000)) as ingest:
        got, body = await _put(ingest, announced.url, data)
        assert (got, body["error"]["code"]) == (507, "no_store")
        assert "capacity of 5000 bytes" in body["error"]["message"]
        assert await counts(ingest.ctx.pool) == (0, 0, 1) and staged_entries(store_root) == []
    async with running_ingest(ingest_settings(settings, store_root, capacity_bytes=20_000)) as ingest:
        got, body = await _put(ingest, announced.url, data)
        assert got == 201
        assert await counts(ingest.ctx.pool) == (1, 1, 0)
