"""Replicas: the destination's ingest receives the bytes of a file minted at another site, verifies every byte against
what the origin minted before it records anything, and emits only instance.created for itself (issue 10)."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import xxhash

from shared.api.ingest import ReplicaFile
from shared.auth import Principal, Role, issue_token
from shared.client import LocalFileError, ObsflowClient
from shared.client.replicas import (
    PeerNotAuthorized,
    PeerUnavailable,
    ReplicaRefused,
    adopt_local_replica,
    push_replica,
)
from shared.errors import TransientError
from shared.runner import ServiceRunner
from shared.settings import Settings, StoreSettings
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
MINTED_AT = datetime(2020, 9, 30, 1, 2, 3, 456789, tzinfo=UTC)
PRODUCED_BY = {"run": "r1", "job": "j1", "workflow": "nightly", "attempt": "1", "inputs": ["zen.2459122.29990"]}


def _xxh3(data: bytes) -> str:
    return f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"


def record_of(data: bytes, name: str = NAME, **fields: Any) -> ReplicaFile:
    """The record of a file minted at 'karoo', as its file.minted said."""
    values: dict[str, Any] = {
        "name": name, "size": len(data), "checksum": _xxh3(data), "file_type": "uvh5",
        "observation_id": "zen.2459122.30000", "start_jd": 2459122.3, "duration_s": 16.1, "origin_site": "karoo",
        "uploader": "correlator", "created_at": MINTED_AT, "produced_by": PRODUCED_BY, **fields,
    }
    return ReplicaFile(**values)


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
async def ingest(settings: Settings, store_root: Path) -> AsyncIterator[ServiceRunner]:
    async with running_ingest(ingest_settings(settings, store_root, max_file_bytes=64 * 1024 * 1024)) as runner:
        yield runner


class Peer:
    """The sending site's transfer service, as seen by the destination's ingest: an account with a token."""

    def __init__(self, runner: ServiceRunner, account: str = "transfer-karoo", role: Role = Role.READ_APPEND) -> None:
        secret = runner.settings.auth_secret.get_secret_value()  # type: ignore[union-attr]
        self.headers = {"Authorization": f"Bearer {issue_token(secret, Principal(account, role), 3600)}"}
        self.base = f"http://127.0.0.1:{runner.settings.http_port('ingest')}"

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers=self.headers) as session, session.post(
            f"{self.base}{path}", data=json.dumps(body), headers={"Content-Type": "application/json"}
        ) as response:
            return response.status, await response.json()

    async def announce(self, record: ReplicaFile) -> tuple[int, Any]:
        return await self.post("/api/v1/replicas", {"file": record.model_dump(mode="json")})

    async def put(self, url: str, data: bytes) -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers=self.headers) as session, session.put(
            f"{self.base}{url}", data=io.BytesIO(data)
        ) as response:
            return response.status, await response.json()

    async def deliver(self, record: ReplicaFile, data: bytes) -> tuple[int, Any]:
        status, ticket = await self.announce(record)
        assert status == 201, ticket
        return await self.put(ticket["url"], data)


async def _files_row(runner: ServiceRunner, name: str = NAME) -> dict[str, Any]:
    row = await runner.ctx.pool.fetchrow("SELECT * FROM files WHERE name = $1", name)
    assert row is not None, f"no files row for {name}"
    return {**dict(row), "metadata": json.loads(row["metadata"]) if row["metadata"] else None}


async def test_a_replica_is_recorded_as_its_origin_minted_it(ingest: ServiceRunner, store_root: Path) -> None:
    data = os.urandom(6 * 1024 * 1024 + 7)  # past the whole-body size: streamed in pipelined writes
    record = record_of(data)
    peer = Peer(ingest)
    status, ticket = await peer.announce(record)
    assert status == 201 and ticket["size"] == len(data) and ticket["checksum"] == record.checksum
    assert await counts(ingest.ctx.pool) == (0, 0, 1)  # a pending replica reserving its size
    status, answer = await peer.put(ticket["url"], data)
    assert status == 201 and answer["created"] is True, answer
    document = answer["file"]
    assert (document["origin_site"], document["uploader"]) == ("karoo", "correlator")
    assert datetime.fromisoformat(document["created_at"]) == MINTED_AT
    row = await _files_row(ingest)
    assert (row["origin_site"], row["uploader"], row["created_at"]) == ("karoo", "correlator", MINTED_AT)
    assert (row["size"], row["checksum"], row["file_type"]) == (len(data), record.checksum, "uvh5")
    assert (row["observation_id"], row["start_jd"], row["duration_s"]) == ("zen.2459122.30000", 2459122.3, 16.1)
    assert row["metadata"] == {"produced_by": PRODUCED_BY, "delivered_by": "transfer-karoo"}
    instances = await ingest.ctx.pool.fetch("SELECT store, path, size, verified_at FROM instances")
    assert len(instances) == 1 and instances[0]["size"] == len(data)
    assert instances[0]["path"] == str(store_root / "main" / NAME)
    assert (store_root / "main" / NAME).read_bytes() == data
    assert await outbox_events(ingest.ctx.pool, "file.minted") == []  # minted at its origin, not here
    (created,) = await outbox_events(ingest.ctx.pool, "instance.created")
    assert created.site == ingest.settings.site and created.producer == "ingest"
    assert created.payload.site == ingest.settings.site  # type: ignore[attr-defined]
    assert created.payload.checksum == record.checksum  # type: ignore[attr-defined]
    assert created.payload.verified_at == instances[0]["verified_at"]  # type: ignore[attr-defined]
    assert created.payload.path == instances[0]["path"]  # type: ignore[attr-defined]
    assert await counts(ingest.ctx.pool) == (1, 1, 0) and staged_entries(store_root) == []


async def test_a_corrupted_replica_is_refused_and_the_same_upload_can_be_sent_again(
    ingest: ServiceRunner, store_root: Path
) -> None:
    data = os.urandom(200_000)
    corrupted = bytearray(data)
    corrupted[123_456] ^= 0x01  # one bit flipped in transit
    peer = Peer(ingest)
    status, ticket = await peer.announce(record_of(data))
    assert status == 201
    status, again = await peer.announce(record_of(data))  # announced again (a lost answer): the same pending replica
    assert status == 200 and again["upload_id"] == ticket["upload_id"], again
    status, refused = await peer.put(ticket["url"], bytes(corrupted))
    assert (status, refused["error"]["code"]) == (422, "checksum_mismatch"), refused
    assert "re-send" in refused["error"]["message"]
    status, refused = await peer.put(ticket["url"], data[:-1])  # a byte short
    assert (status, refused["error"]["code"]) == (422, "size_mismatch"), refused
    # Nothing recorded but the rejections; the pending replica stays for the sender to try again.
    assert await counts(ingest.ctx.pool) == (0, 0, 1)
    assert await rejection_codes(ingest.ctx.pool) == ["checksum_mismatch", "size_mismatch"]
    assert await outbox_events(ingest.ctx.pool, "instance.created") == []
    assert staged_entries(store_root) == []  # nothing of a failed transfer stays staged
    assert not (store_root / "main" / NAME).exists()
    status, answer = await peer.put(ticket["url"], data)
    assert status == 201 and answer["created"] is True, answer
    assert await counts(ingest.ctx.pool) == (1, 1, 0) and staged_entries(store_root) == []
    assert len(await outbox_events(ingest.ctx.pool, "instance.created")) == 1


async def test_the_same_replica_again_is_already_held_and_changes_nothing(ingest: ServiceRunner) -> None:
    data = b"a file minted at karoo"
    record = record_of(data)
    peer, other = Peer(ingest), Peer(ingest, account="transfer-nrao")
    status, early = await other.announce(record)  # another peer announces the same file before it arrives
    assert status == 201
    status, first = await peer.deliver(record, data)
    assert status == 201
    status, again = await peer.announce(record)  # a retried transfer after a lost response
    assert status == 200 and again["created"] is False, again
    assert again["file"]["checksum"] == record.checksum and len(again["file"]["instances"]) == 1
    status, late = await other.put(early["url"], data)  # the other peer's bytes find it held, and add nothing
    assert status == 200 and late["created"] is False, late
    status, ticket = await other.announce(record_of(data, name="zen.2459122.30001.sum.uvh5"))
    assert status == 201
    source = write_file(incoming(ingest.settings) / "copy.uvh5", data)
    status, local = await other.post("/api/v1/replicas/local", {"file": record.model_dump(mode="json"),
                                                                "path": str(source)})
    assert status == 200 and local["created"] is False, local
    assert await counts(ingest.ctx.pool) == (1, 1, 1)  # the other name's pending replica only
    assert len(await outbox_events(ingest.ctx.pool, "instance.created")) == 1
    assert await outbox_events(ingest.ctx.pool, "file.minted") == []
    assert first["file"]["created_at"] == again["file"]["created_at"]


async def test_a_replica_of_a_name_held_with_other_content_is_a_conflict(ingest: ServiceRunner) -> None:
    peer = Peer(ingest)
    status, _ = await peer.deliver(record_of(b"the first file"), b"the first file")
    assert status == 201
    status, refused = await peer.announce(record_of(b"another file"))
    assert (status, refused["error"]["code"]) == (409, "name_conflict"), refused
    assert "choose another name" in refused["error"]["message"]
    # The same when the name is taken between the announcement and the PUT: the pending replica then ends.
    late = record_of(b"late bytes", name="zen.2459122.30002.sum.uvh5")
    status, ticket = await peer.announce(late)
    assert status == 201
    rival = Peer(ingest, account="transfer-nrao")
    status, _ = await rival.deliver(record_of(b"rival bytes", name=late.name), b"rival bytes")
    assert status == 201
    status, refused = await peer.put(ticket["url"], b"late bytes")
    assert (status, refused["error"]["code"]) == (409, "name_conflict"), refused
    assert await counts(ingest.ctx.pool) == (2, 2, 0)
    assert await rejection_codes(ingest.ctx.pool) == ["name_conflict", "name_conflict"]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"name": "../etc/passwd"}, 400, "invalid_name"),
        ({"file_type": "uv h5"}, 400, "invalid_type"),
        ({"checksum": "md5:" + "0" * 32}, 400, "invalid_checksum"),  # replicas are verified against xxh3-128
        ({"checksum": "xxh3-128:XYZ"}, 400, "invalid_checksum"),
        ({"size": 64 * 1024 * 1024 + 1}, 413, "too_large"),
        ({"size": -1}, 400, "bad_request"),
        ({"size": "5"}, 400, "bad_request"),
        ({"created_at": "2020-09-30T00:00:00"}, 400, "bad_request"),  # a time without its offset
        ({"origin_site": ""}, 400, "bad_request"),
    ],
)
async def test_invalid_replica_claims_are_refused(ingest: ServiceRunner, change: dict[str, Any], status: int,
                                                  code: str) -> None:
    body = {"file": {**record_of(b"hello").model_dump(mode="json"), **change}}
    answer_status, answer = await Peer(ingest).post("/api/v1/replicas", body)
    assert (answer_status, answer["error"]["code"]) == (status, code), answer
    assert await counts(ingest.ctx.pool) == (0, 0, 0)
    assert await rejection_codes(ingest.ctx.pool) == ([] if code == "bad_request" else [code])


async def test_a_replica_needs_a_read_append_token(ingest: ServiceRunner) -> None:
    status, answer = await Peer(ingest, role=Role.READ_ONLY).announce(record_of(b"hello"))
    assert (status, answer["error"]["code"]) == (403, "forbidden")
    status, answer = await Peer(ingest).announce(record_of(b"hello"))
    assert status == 201
    status, answer = await Peer(ingest, account="someone-else").put(answer["url"], b"hello")
    assert (status, answer["error"]["code"]) == (403, "forbidden")  # a pending replica is its sender's


def _two_stores(settings: Settings, tmp_path: Path, *, second: str) -> Settings:
    """A site whose first store is read-only (with plenty of room) and whose second is `second`."""
    site = ingest_settings(settings, tmp_path / "archive")
    (tmp_path / "fresh").mkdir()
    return site.model_copy(update={"stores": [
        StoreSettings(name="archive", root=tmp_path / "archive", state="read-only"),
        StoreSettings(name="fresh", root=tmp_path / "fresh", state=second, capacity_bytes=100_000),
    ]})


async def test_a_full_store_refuses_a_replica_with_507(settings: Settings, tmp_path: Path) -> None:
    site = ingest_settings(settings, tmp_path / "store", capacity_bytes=100_000)
    async with running_ingest(site) as ingest:
        peer = Peer(ingest)
        status, ticket = await peer.announce(record_of(os.urandom(60_000)))
        assert status == 201
        status, refused = await peer.announce(record_of(os.urandom(60_000), name="zen.2459122.30001.sum.uvh5"))
        assert (status, refused["error"]["code"]) == (507, "no_store"), refused
        assert "has room for 40000 bytes" in refused["error"]["message"]
        assert await counts(ingest.ctx.pool) == (0, 0, 1)
        assert await rejection_codes(ingest.ctx.pool) == ["no_store"]


async def test_a_read_only_store_is_never_chosen(settings: Settings, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    async with running_ingest(_two_stores(settings, tmp_path, second="online")) as ingest:
        status, answer = await Peer(ingest).deliver(record_of(data), data)
        assert status == 201 and [i["store"] for i in answer["file"]["instances"]] == ["fresh"]
        assert (tmp_path / "fresh" / "main" / NAME).read_bytes() == data
        assert list((tmp_path / "archive" / "main").iterdir()) == []
        source = write_file(incoming(ingest.settings) / "local.uvh5", data[:100])
        local = record_of(data[:100], name="zen.2459122.30001.sum.uvh5")
        status, answer = await Peer(ingest).post("/api/v1/replicas/local", {"file": local.model_dump(mode="json"),
                                                                            "path": str(source)})
        assert status == 201 and [i["store"] for i in answer["file"]["instances"]] == ["fresh"], answer


async def test_a_site_with_no_online_store_takes_no_replica(settings: Settings, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    async with running_ingest(_two_stores(settings, tmp_path, second="sneaker")) as ingest:
        status, refused = await Peer(ingest).announce(record_of(data))
        assert (status, refused["error"]["code"]) == (507, "no_store"), refused
        assert "'archive' is read-only" in refused["error"]["message"]
        assert await counts(ingest.ctx.pool) == (0, 0, 0)


async def test_a_local_replica_is_adopted_with_its_origins_record(ingest: ServiceRunner, store_root: Path) -> None:
    data = os.urandom(300_000)
    source = write_file(incoming(ingest.settings) / "from-karoo" / NAME, data)
    peer = Peer(ingest)
    damaged = record_of(data, checksum=_xxh3(data + b"!"))
    status, refused = await peer.post("/api/v1/replicas/local", {"file": damaged.model_dump(mode="json"),
                                                                 "path": str(source)})
    assert (status, refused["error"]["code"]) == (422, "checksum_mismatch"), refused
    assert await counts(ingest.ctx.pool) == (0, 0, 0) and staged_entries(store_root) == []
    status, answer = await peer.post("/api/v1/replicas/local", {"file": record_of(data).model_dump(mode="json"),
                                                                "path": str(source)})
    assert status == 201 and answer["created"] is True, answer
    row = await _files_row(ingest)
    assert (row["origin_site"], row["uploader"], row["created_at"]) == ("karoo", "correlator", MINTED_AT)
    assert row["metadata"] == {"produced_by": PRODUCED_BY, "delivered_by": "transfer-karoo"}
    assert (store_root / "main" / NAME).read_bytes() == data and source.read_bytes() == data  # copied, not moved
    assert await outbox_events(ingest.ctx.pool, "file.minted") == []
    assert len(await outbox_events(ingest.ctx.pool, "instance.created")) == 1
    assert await rejection_codes(ingest.ctx.pool) == ["checksum_mismatch"]


async def test_a_local_replica_outside_the_source_roots_is_refused(ingest: ServiceRunner, tmp_path: Path) -> None:
    outside = write_file(tmp_path / "elsewhere" / NAME, b"hello")
    peer = Peer(ingest)
    for path in (str(outside), "/etc/passwd", f"{incoming(ingest.settings)}/../{NAME}"):
        status, refused = await peer.post("/api/v1/replicas/local", {"file": record_of(b"hello").model_dump(
            mode="json"), "path": path})
        assert (status, refused["error"]["code"]) == (400, "invalid_path"), (path, refused)
    status, refused = await peer.post("/api/v1/replicas/local", {"file": record_of(b"hello").model_dump(
        mode="json"), "path": str(incoming(ingest.settings) / "nothing-here")})
    assert (status, refused["error"]["code"]) == (404, "not_found"), refused
    assert await counts(ingest.ctx.pool) == (0, 0, 0)
    assert await rejection_codes(ingest.ctx.pool) == ["invalid_path"] * 3 + ["not_found"]


async def test_push_replica_streams_the_bytes_and_short_cuts_a_file_already_held(
    ingest: ServiceRunner, tmp_path: Path
) -> None:
    data = os.urandom(1024 * 1024 + 5)
    source = write_file(tmp_path / "karoo-store" / NAME, data)
    record = record_of(data)
    peer = Peer(ingest)
    token = peer.headers["Authorization"].removeprefix("Bearer ")
    spent: list[int] = []

    async def cap(nbytes: int) -> None:  # a bandwidth cap is told of every chunk
        spent.append(nbytes)

    async with aiohttp.ClientSession() as session:
        result = await push_replica(session, peer.base, token, record, source, progress=cap, chunk_bytes=256 * 1024)
        assert (result.name, result.delivered, result.already, result.bytes_sent) == (NAME, True, False, len(data))
        assert result.file.origin_site == "karoo" and result.file.created_at == MINTED_AT
        assert sum(spent) == len(data) and len(spent) == 5 and max(spent) == 256 * 1024
        spent.clear()
        again = await push_replica(session, peer.base, token, record, tmp_path / "not-even-there", progress=cap)
        assert again.already is True and again.bytes_sent == 0 and spent == []  # no byte sent, the source unread
    assert await counts(ingest.ctx.pool) == (1, 1, 0)
    assert len(await outbox_events(ingest.ctx.pool, "instance.created")) == 1
    assert await outbox_events(ingest.ctx.pool, "file.minted") == []


async def test_push_replica_waits_for_the_cap_of_every_chunk_before_it_returns(
    ingest: ServiceRunner, tmp_path: Path
) -> None:
    # A file of one chunk: the peer answers once it has the bytes, so a cap waited for after them would be cut short.
    data = os.urandom(256 * 1024)
    source = write_file(tmp_path / "karoo-store" / NAME, data)
    peer = Peer(ingest)
    token = peer.headers["Authorization"].removeprefix("Bearer ")
    spent: list[int] = []

    async def slow_cap(nbytes: int) -> None:
        # A bandwidth cap that lets these bytes go only after half a second: the duration is the input under test
        # (a cap cut short would show as nothing spent when the push returns), not a wait for a condition.
        await asyncio.sleep(0.5)
        spent.append(nbytes)

    async with aiohttp.ClientSession() as session:
        result = await push_replica(session, peer.base, token, record_of(data), source, progress=slow_cap)
    assert result.delivered and spent == [len(data)]


async def test_push_replica_says_what_went_wrong_and_whether_to_try_again(
    settings: Settings, tmp_path: Path
) -> None:
    site = ingest_settings(settings, tmp_path / "store", capacity_bytes=100_000, max_file_bytes=200_000)
    async with running_ingest(site) as ingest, aiohttp.ClientSession() as session:
        peer = Peer(ingest)
        token = peer.headers["Authorization"].removeprefix("Bearer ")
        data = os.urandom(40_000)
        source = write_file(tmp_path / "karoo" / NAME, data)
        with pytest.raises(ReplicaRefused) as corrupted:  # the instance here differs from what was minted
            await push_replica(session, peer.base, token, record_of(data, checksum=_xxh3(b"x" + data[1:])), source)
        assert (corrupted.value.status, corrupted.value.code, corrupted.value.retryable) == (
            422, "checksum_mismatch", True)
        assert "re-send" in corrupted.value.message
        with pytest.raises(LocalFileError) as short:  # an instance of the wrong size is not sent at all
            await push_replica(session, peer.base, token, record_of(data + b"more"), source)
        assert "damaged" in str(short.value)
        delivered = await push_replica(session, peer.base, token, record_of(data), source)
        assert delivered.delivered
        with pytest.raises(ReplicaRefused) as conflict:
            await push_replica(session, peer.base, token, record_of(b"other content"), source)
        assert (conflict.value.status, conflict.value.code, conflict.value.retryable) == (409, "name_conflict", False)
        big = record_of(os.urandom(70_000), name="zen.2459122.30001.sum.uvh5")
        with pytest.raises(ReplicaRefused) as full:
            await push_replica(session, peer.base, token, big, source)
        assert (full.value.status, full.value.code, full.value.retryable) == (507, "no_store", True)
        with pytest.raises(ReplicaRefused) as too_large:
            await push_replica(session, peer.base, token, record_of(b"", size=300_000), source)
        assert (too_large.value.status, too_large.value.code, too_large.value.retryable) == (413, "too_large", False)
        with pytest.raises(PeerNotAuthorized) as unauthorized:
            await push_replica(session, peer.base, "not-a-token", record_of(data), source, peer="karoo")
        assert unauthorized.value.status == 401 and "ingest service of karoo refused our token" in str(
            unauthorized.value)
        reader = Peer(ingest, role=Role.READ_ONLY).headers["Authorization"].removeprefix("Bearer ")
        with pytest.raises(PeerNotAuthorized) as forbidden:
            await push_replica(session, peer.base, reader, record_of(data), source)
        assert forbidden.value.status == 403
    with pytest.raises(PeerUnavailable) as gone:  # the service stopped: nothing listens there now
        async with aiohttp.ClientSession() as session:
            await push_replica(session, peer.base, token, record_of(data), source, peer="karoo")
    assert isinstance(gone.value, TransientError) and "karoo" in str(gone.value)


async def test_adopt_local_replica_through_a_clients_transport(ingest: ServiceRunner) -> None:
    data = os.urandom(10_000)
    path = write_file(incoming(ingest.settings) / "sneaker" / NAME, data)
    peer = Peer(ingest)
    token = peer.headers["Authorization"].removeprefix("Bearer ")
    async with ObsflowClient(peer.base, token) as client:
        adopted = await adopt_local_replica(client._transport, peer.base, token, record_of(data), path)
        assert adopted.delivered and adopted.file.instances[0].size == len(data)
        again = await adopt_local_replica(client._transport, peer.base, token, record_of(data), path)
        assert again.already
        pushed = await push_replica(client._transport, peer.base, token, record_of(data), path)
        assert pushed.already and pushed.bytes_sent == 0
        with pytest.raises(ReplicaRefused) as outside:
            await adopt_local_replica(client._transport, peer.base, token, record_of(data), "/etc/passwd")
        assert (outside.value.status, outside.value.code, outside.value.retryable) == (400, "invalid_path", False)
    assert len(await outbox_events(ingest.ctx.pool, "instance.created")) == 1
