"""The HTTP ways in: two-phase upload with a token, resumable announcements, local-path and directory uploads."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import xxhash

from shared.api.ingest import MintAnswer
from shared.auth import Principal, Role, issue_token
from shared.client import ClientError, ObsflowClient
from shared.runner import ServiceRunner
from tests.conftest import wait_for
from tests.ingest.service_support import (
    counts,
    incoming,
    ingest_settings,
    outbox_events,
    rejection_codes,
    running_ingest,
    staged_entries,
    write_file,
)

pytestmark = pytest.mark.usefixtures("drop_schemas")
NAME = "zen.2459122.30000.sum.uvh5"


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
async def ingest(settings, store_root: Path) -> AsyncIterator[ServiceRunner]:
    options = {"upload_expiry_s": 0.5, "expiry_interval_s": 0.2, "max_file_bytes": 64 * 1024 * 1024}
    async with running_ingest(ingest_settings(settings, store_root, **options)) as runner:
        yield runner


def _token(runner: ServiceRunner, role: Role, account: str = "alice") -> str:
    secret = runner.settings.auth_secret.get_secret_value()  # type: ignore[union-attr]
    return issue_token(secret, Principal(account, role), 3600)


def _client(runner: ServiceRunner, role: Role = Role.READ_APPEND, account: str = "alice") -> ObsflowClient:
    return ObsflowClient(f"http://127.0.0.1:{runner.settings.http_port('ingest')}", _token(runner, role, account))


def _xxh3(data: bytes) -> str:
    return f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"


async def test_two_phase_upload_end_to_end(ingest: ServiceRunner, tmp_path: Path, store_root: Path) -> None:
    data = os.urandom(20 * 1024 * 1024 + 123)  # several pipelined writes and a short tail
    path = write_file(tmp_path / NAME, data)
    async with _client(ingest) as client:
        document = await client.upload(path, file_type="uvh5", metadata={"produced_by": {"step": "xrfi"}})
        assert document.name == NAME and document.size == len(data)
        assert document.checksum == _xxh3(data) and document.uploader == "alice"
        assert document.instances[0].store == "main"
        again = await client.upload(path, file_type="uvh5")  # already minted: returned, nothing sent
        assert again.created_at == document.created_at
        with pytest.raises(ClientError) as refused:
            await client.announce(NAME, 3, _xxh3(b"abc"), "uvh5")
    assert refused.value.status == 409 and refused.value.code == "name_conflict"
    assert "already exists" in str(refused.value)
    assert (store_root / "main" / NAME).read_bytes() == data
    pool = ingest.ctx.pool
    assert await counts(pool) == (1, 1, 0)
    minted = await outbox_events(pool, "file.minted")
    assert len(minted) == 1 and minted[0].payload.produced_by == {"step": "xrfi"}
    assert await rejection_codes(pool) == ["name_conflict"]


async def test_reannouncing_returns_the_same_pending_upload(ingest: ServiceRunner) -> None:
    async with _client(ingest) as client:
        first = await client.announce(NAME, 5, _xxh3(b"hello"), "uvh5")
        second = await client.announce(NAME, 5, _xxh3(b"hello"), "uvh5")
        assert first.upload_id == second.upload_id and first.method == "PUT"
        url = f"{client.base_url}{first.url}"
    headers = {"Authorization": f"Bearer {_token(ingest, Role.READ_APPEND)}"}
    async with aiohttp.ClientSession(headers=headers) as session, session.put(url, data=b"hello") as response:
        assert response.status == 201
        assert (await response.json())["file"]["size"] == 5


async def _put_as(runner: ServiceRunner, account: str, url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """PUT `data` to an upload URL as `account` (large bodies from a stream, as aiohttp wants)."""
    headers = {"Authorization": f"Bearer {_token(runner, Role.READ_APPEND, account)}"}
    full = f"http://127.0.0.1:{runner.settings.http_port('ingest')}{url}"
    async with aiohttp.ClientSession(headers=headers) as session, session.put(full, data=io.BytesIO(data)) as response:
        return response.status, await response.json()


async def test_uploads_belong_to_their_account(ingest: ServiceRunner) -> None:
    data = b"the same bytes from two pipelines"
    async with _client(ingest) as alice, _client(ingest, account="bob") as bob:
        theirs = await alice.announce(NAME, len(data), _xxh3(data), "uvh5")
        mine = await bob.announce(NAME, len(data), _xxh3(data), "uvh5")
    assert mine.upload_id != theirs.upload_id
    status, body = await _put_as(ingest, "bob", theirs.url, data)
    assert (status, body["error"]["code"]) == (403, "forbidden")  # alice's upload stays hers...
    status, body = await _put_as(ingest, "bob", mine.url, data)  # ...and bob is not locked out
    assert status == 201 and body["file"]["uploader"] == "bob"
    status, body = await _put_as(ingest, "alice", theirs.url, data)  # alice's copy: the same file, already there
    assert status == 200 and body["created"] is False
    assert await counts(ingest.ctx.pool) == (1, 1, 0)
    assert len(await outbox_events(ingest.ctx.pool, "file.minted")) == 1


async def test_two_accounts_racing_to_put_the_same_bytes_mint_it_once(ingest: ServiceRunner) -> None:
    data = os.urandom(3 * 1024 * 1024)
    async with _client(ingest) as alice, _client(ingest, account="bob") as bob:
        urls = {"alice": (await alice.announce(NAME, len(data), _xxh3(data), "uvh5")).url,
                "bob": (await bob.announce(NAME, len(data), _xxh3(data), "uvh5")).url}
    answers = await asyncio.gather(*(_put_as(ingest, account, url, data) for account, url in urls.items()))
    assert sorted(status for status, _ in answers) == [200, 201]
    assert {body["file"]["checksum"] for _, body in answers} == {_xxh3(data)}
    assert await counts(ingest.ctx.pool) == (1, 1, 0)
    assert len(await outbox_events(ingest.ctx.pool, "file.minted")) == 1


async def test_a_corrected_announcement_replaces_the_accounts_pending_upload(ingest: ServiceRunner) -> None:
    async with _client(ingest) as client:
        first = await client.announce(NAME, 5, _xxh3(b"hello"), "uvh5")
        corrected = await client.announce(NAME, 6, _xxh3(b"hello!"), "uvh5")
    assert corrected.upload_id != first.upload_id
    status, body = await _put_as(ingest, "alice", first.url, b"hello")
    assert (status, body["error"]["code"]) == (404, "unknown_upload")
    assert await counts(ingest.ctx.pool) == (0, 0, 1)  # one pending upload, one reservation
    status, _ = await _put_as(ingest, "alice", corrected.url, b"hello!")
    assert status == 201


async def test_tokens_and_roles_are_enforced(ingest: ServiceRunner) -> None:
    async with _client(ingest, Role.READ_ONLY) as client:
        with pytest.raises(ClientError) as forbidden:
            await client.announce(NAME, 5, _xxh3(b"hello"), "uvh5")
    assert forbidden.value.status == 403 and "read-append" in str(forbidden.value)
    async with ObsflowClient(f"http://127.0.0.1:{ingest.settings.http_port('ingest')}", None) as anonymous:
        with pytest.raises(ClientError) as unauthenticated:
            await anonymous.announce(NAME, 5, _xxh3(b"hello"), "uvh5")
    assert unauthenticated.value.status == 401
    assert await counts(ingest.ctx.pool) == (0, 0, 0)


@pytest.mark.parametrize(
    ("name", "size", "checksum", "status", "code"),
    [
        ("../etc/passwd", 5, None, 400, "invalid_name"),
        ("zen\u0430.uvh5", 5, None, 400, "invalid_name"),
        (NAME, 64 * 1024 * 1024 + 1, None, 413, "too_large"),
        (NAME, 5, "xxh3-128:XYZ", 400, "invalid_checksum"),
    ],
)
async def test_bad_claims_are_refused(ingest: ServiceRunner, name, size, checksum, status, code) -> None:
    async with _client(ingest) as client:
        with pytest.raises(ClientError) as refused:
            await client.announce(name, size, checksum or _xxh3(b"hello"), "uvh5")
    assert (refused.value.status, refused.value.code) == (status, code)
    assert await rejection_codes(ingest.ctx.pool) == [code]
    assert await counts(ingest.ctx.pool) == (0, 0, 0)


async def test_local_path_upload_of_a_directory(ingest: ServiceRunner, store_root: Path) -> None:
    source_root = incoming(ingest.settings)
    tree = source_root / "zen.2459122.30000.sum.ms"
    write_file(tree / "a" / "b.dat", b"bbb")
    write_file(tree / "c.dat", b"cc")
    async with _client(ingest) as client:
        document = await client.upload_local(tree, file_type="ms")
        assert document.is_directory is True and document.size == 5
        with pytest.raises(ClientError) as missing:
            await client.upload_local(source_root / "nothing-here.uvh5", file_type="uvh5")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert (store_root / "main" / tree.name / "a" / "b.dat").read_bytes() == b"bbb"
    assert staged_entries(store_root) == []


async def test_local_path_upload_checks_md5_and_refuses_relative_paths(ingest: ServiceRunner) -> None:
    path = write_file(incoming(ingest.settings) / NAME, b"local bytes")
    async with _client(ingest) as client:
        document = await client.upload_local(path, file_type="uvh5", md5=True)
        assert document.md5.startswith("md5:")
        with pytest.raises(ClientError) as relative:
            await client._transport.call("ingest", "POST", "/uploads/local", MintAnswer,
                                         json={"path": "x/y.uvh5", "type": "uvh5"})
    assert (relative.value.status, relative.value.code) == (400, "invalid_path")


async def test_abandoned_uploads_expire(ingest: ServiceRunner) -> None:
    async with _client(ingest) as client:
        await client.announce(NAME, 5, _xxh3(b"hello"), "uvh5")
    assert (await counts(ingest.ctx.pool))[2] == 1
    await wait_for(lambda: _no_uploads(ingest), timeout_s=10)


async def _no_uploads(runner: ServiceRunner) -> bool:
    return (await counts(runner.ctx.pool))[2] == 0


async def test_a_client_gone_mid_body_leaves_the_upload_pending_and_nothing_staged(
    settings, store_root: Path, tmp_path: Path
) -> None:
    data = os.urandom(100_000)  # read whole by the server (the small-body path)
    async with running_ingest(ingest_settings(settings, store_root)) as ingest, _client(ingest) as client:
        announced = await client.announce(NAME, len(data), _xxh3(data), "uvh5")
        reader, writer = await asyncio.open_connection("127.0.0.1", ingest.settings.http_port("ingest"))
        head = (f"PUT {announced.url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n"
                f"Authorization: Bearer {_token(ingest, Role.READ_APPEND)}\r\n\r\n")
        writer.write(head.encode() + data[:40_000])
        await writer.drain()
        writer.close()  # the client is gone after 40,000 of 100,000 bytes
        await writer.wait_closed()
        pool = ingest.ctx.pool
        assert await reader.read() == b""  # nobody to answer
        assert await counts(pool) == (0, 0, 1) and staged_entries(store_root) == []  # still pending
        path = write_file(tmp_path / NAME, data)
        sent: list[MintAnswer] = []

        async def sent_again() -> bool:  # 409 while the broken request is still being wound up
            try:
                sent.append(await client.send(announced.url, path, len(data)))
            except ClientError as e:
                assert e.code == "upload_in_progress"
                return False
            return True

        await wait_for(sent_again)
        assert sent[0].created is True and sent[0].file.size == len(data)
        assert await counts(pool) == (1, 1, 0) and staged_entries(store_root) == []
        assert (store_root / "main" / NAME).read_bytes() == data
