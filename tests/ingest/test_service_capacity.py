"""Store capacity: reserved at announcement, checked again under a lock at the mint, honoured across restarts; and
announcements no store has room for wait (durably, visibly) and are ingested by themselves once room appears."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import xxhash

from services.ingest.service import SPEC
from shared.api.ingest import UploadTicket
from shared.auth import Principal, Role, issue_token
from shared.client import ClientError, ObsflowClient
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
KB = 1000
MiB = 1024 * 1024


def _xxh3(data: bytes) -> str:
    return f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"


def _client(runner: ServiceRunner, account: str = "alice") -> ObsflowClient:
    secret = runner.settings.auth_secret.get_secret_value()  # type: ignore[union-attr]
    token = issue_token(secret, Principal(account, Role.READ_APPEND), 3600)
    return ObsflowClient(f"http://127.0.0.1:{runner.settings.http_port('ingest')}", token)


def _name(i: int) -> str:
    return f"zen.2459122.{30000 + i:05d}.sum.uvh5"


def _waiting(runner: ServiceRunner) -> float | None:
    return runner.ctx.metrics.registry.get_sample_value("obsflow_ingest_announcements_waiting")


async def _drain(runner: ServiceRunner) -> None:
    await runner.parts.work_consumers[0].drain(timeout_s=60)


async def _minted_once_each(runner: ServiceRunner, names: set[str]) -> bool:
    minted = [e.payload.name for e in await outbox_events(runner.ctx.pool, "file.minted")]  # type: ignore[attr-defined]
    assert len(minted) == len(set(minted)), "a file was minted twice"
    return set(minted) == names


async def test_two_uploads_that_fit_only_one_at_a_time_get_one_place(settings, tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = [os.urandom(100 * KB), os.urandom(100 * KB)]
    async with running_ingest(ingest_settings(settings, store, capacity_bytes=150 * KB)) as ingest, \
            _client(ingest) as client:
        answers = await asyncio.gather(
            *(client.announce(_name(i), len(data), _xxh3(data), "uvh5") for i, data in enumerate(files)),
            return_exceptions=True,
        )
        placed = [a for a in answers if isinstance(a, UploadTicket)]
        refused = [a for a in answers if isinstance(a, ClientError)]
        assert len(placed) == 1 and len(refused) == 1, answers
        assert (refused[0].status, refused[0].code) == (507, "no_store")
        assert "has room for 50000 bytes" in str(refused[0])
        winner = files[answers.index(placed[0])]
        sent = await client.send(placed[0].url, tmp_path / "unused", len(winner), body=winner)
        assert sent.created is True
        with pytest.raises(ClientError) as still:  # minted bytes count as the reservation did
            await client.announce(_name(7), 100 * KB, _xxh3(b"x"), "uvh5")
        assert still.value.status == 507
        assert await counts(ingest.ctx.pool) == (1, 1, 0)


async def test_two_announcements_that_fit_only_one_at_a_time_mint_one(settings, amqp, tmp_path: Path) -> None:
    store = tmp_path / "store"
    paths = [write_file(incoming_beside(store) / _name(i), os.urandom(100 * KB)) for i in range(2)]
    async with running_ingest(ingest_settings(settings, store, capacity_bytes=150 * KB)) as ingest:
        await announce(amqp, settings, *(announcement(p, site=settings.site) for p in paths))
        await _drain(ingest)
        assert await counts(ingest.ctx.pool) == (1, 1, 0)
        assert _waiting(ingest) == 1
        assert await rejection_codes(ingest.ctx.pool) == []  # waiting is not a refusal
        assert len(os.listdir(store / "main")) == 1 and staged_entries(store) == []


async def test_a_directory_larger_than_the_room_is_not_copied(settings, amqp, tmp_path: Path) -> None:
    store = tmp_path / "store"
    tree = incoming_beside(store) / "zen.2459122.30000.sum.ms"
    for i in range(4):
        write_file(tree / f"table{i}" / "data.bin", os.urandom(40 * KB))  # 160 KB in all
    async with running_ingest(ingest_settings(settings, store, capacity_bytes=100 * KB)) as ingest, \
            _client(ingest) as client:
        with pytest.raises(ClientError) as refused:  # a caller who is present is told
            await client.upload_local(tree, file_type="ms")
        assert (refused.value.status, refused.value.code) == (507, "no_store")
        assert "file of 160000 bytes" in str(refused.value)
        await announce(amqp, settings, announcement(tree, site=settings.site, file_type="ms"))  # an instrument's waits
        await _drain(ingest)
        assert _waiting(ingest) == 1
        assert await counts(ingest.ctx.pool) == (0, 0, 0)
        assert os.listdir(store / "main") == [] and staged_entries(store) == []
    async with running_ingest(ingest_settings(settings, store, capacity_bytes=200 * KB)) as ingest:
        await wait_for(lambda: _minted_once_each(ingest, {tree.name}))
        await wait_for(lambda: _waiting(ingest) == 0)


async def test_reservations_are_honoured_across_a_restart(settings, tmp_path: Path) -> None:
    store = tmp_path / "store"
    first, second = os.urandom(100 * KB), os.urandom(100 * KB)
    options = ingest_settings(settings, store, capacity_bytes=150 * KB)
    async with running_ingest(options) as ingest, _client(ingest) as client:
        pending = await client.announce(_name(0), len(first), _xxh3(first), "uvh5")
    async with running_ingest(options) as ingest, _client(ingest) as client:
        with pytest.raises(ClientError) as refused:
            await client.announce(_name(1), len(second), _xxh3(second), "uvh5")
        assert refused.value.status == 507
        sent = await client.send(pending.url, tmp_path / "unused", len(first), body=first)
        assert sent.created is True


async def test_room_a_crashed_copy_had_reserved_is_free_again_at_start(settings, tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = os.urandom(100 * KB)
    options = ingest_settings(settings, store, capacity_bytes=150 * KB)
    async with running_ingest(options):
        pass  # the schema exists
    crashed = f"ann-{uuid.uuid4().hex}"
    # What a worker killed mid-copy leaves: its reservation and its partial bytes (its lock died with it).
    schema = settings.schema_for("ingest")
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": schema})
    try:
        await conn.execute(
            "INSERT INTO uploads (upload_id, kind, name, size, file_type, store, uploader, expires_at)"
            " VALUES ($1, 'copy', $2, $3, 'uvh5', 'main', 'correlator', $4)",
            crashed, _name(9), 120 * KB, datetime.now(UTC) + timedelta(days=1),
        )
    finally:
        await conn.close()
    write_file(store / "staging" / crashed, b"partial")
    async with running_ingest(options) as ingest, _client(ingest) as client:
        assert staged_entries(store) == []
        pending = await client.announce(_name(0), len(data), _xxh3(data), "uvh5")  # 507 if 120 KB were still held
        sent = await client.send(pending.url, tmp_path / "unused", len(data), body=data)
        assert sent.created is True
        assert await counts(ingest.ctx.pool) == (1, 1, 0)


async def test_announcements_beyond_the_room_wait_and_are_minted_once_room_appears(
    settings, amqp, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    paths = [write_file(incoming_beside(store) / _name(i), os.urandom(10 * KB)) for i in range(25)]
    events = [announcement(p, site=settings.site) for p in paths]
    async with running_ingest(ingest_settings(settings, store, capacity_bytes=100 * KB)) as ingest:
        await announce(amqp, settings, *events)
        await _drain(ingest)
        assert await counts(ingest.ctx.pool) == (10, 10, 0)
        assert _waiting(ingest) == 15
        assert ingest.ctx.metrics.registry.get_sample_value("obsflow_ingest_announcements_waiting_bytes") == 150 * KB
        await announce(amqp, settings, *events)  # the instrument announces them all again: nothing changes
        await _drain(ingest)
        assert await counts(ingest.ctx.pool) == (10, 10, 0) and _waiting(ingest) == 15
        assert await rejection_codes(ingest.ctx.pool) == []
    paths[-1].unlink()  # one vanishes while it waits: a genuine verdict once it is looked at again
    async with running_ingest(ingest_settings(settings, store, capacity_bytes=1000 * KB)) as ingest:
        await wait_for(lambda: _minted_once_each(ingest, {p.name for p in paths[:-1]}), timeout_s=60)
        await wait_for(lambda: _waiting(ingest) == 0)
        assert await rejection_codes(ingest.ctx.pool) == ["not_found"]
        assert await counts(ingest.ctx.pool) == (24, 24, 0) and staged_entries(store) == []
        assert await ingest.ctx.pool.fetchval("SELECT count(*) FROM waiting_announcements") == 0


async def test_announcements_wait_while_the_store_is_offline(settings, amqp, tmp_path: Path) -> None:
    store = tmp_path / "store"
    path = write_file(incoming_beside(store) / _name(0), b"observed while the store was away")
    async with running_ingest(ingest_settings(settings, store, state="read-only")) as ingest:
        await announce(amqp, settings, announcement(path, site=settings.site))
        await _drain(ingest)
        assert _waiting(ingest) == 1 and await counts(ingest.ctx.pool) == (0, 0, 0)
        reason = await ingest.ctx.pool.fetchval("SELECT reason FROM waiting_announcements")
        assert "'main' is read-only" in reason
    async with running_ingest(ingest_settings(settings, store)) as ingest:
        await wait_for(lambda: _minted_once_each(ingest, {path.name}))


@contextlib.contextmanager
def _tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "small-disk", "24m") as mountpoint:
        yield mountpoint


async def test_a_full_disk_makes_announcements_wait_until_it_grows(
    settings, amqp, tmp_path: Path, small_disk: Path
) -> None:
    paths = [write_file(incoming_beside(small_disk) / _name(i), os.urandom(MiB)) for i in range(40)]
    options = ingest_settings(settings, small_disk, usage_refresh_s=0.2)
    async with running_ingest(options) as ingest:
        await announce(amqp, settings, *(announcement(p, site=settings.site) for p in paths))
        await _drain(ingest)

        async def settled() -> bool:  # the gauge is refreshed with each usage refresh, and resumes may mint meanwhile
            minted, _, _ = await counts(ingest.ctx.pool)
            return _waiting(ingest) == 40 - minted

        await wait_for(settled, timeout_s=30)
        minted, _, _ = await counts(ingest.ctx.pool)
        assert 10 <= minted <= 24 and _waiting(ingest) == 40 - minted  # 24 MiB hold at most 24
        assert await rejection_codes(ingest.ctx.pool) == []
        grown = await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,size=64m", str(small_disk)],
                                        capture_output=True, text=True)
        assert grown.returncode == 0, grown.stderr
        # Nobody re-announces anything: the next usage refresh finds the room.
        await wait_for(lambda: _minted_once_each(ingest, {p.name for p in paths}), timeout_s=60)
        await wait_for(lambda: _waiting(ingest) == 0)
        assert await counts(ingest.ctx.pool) == (40, 40, 0) and staged_entries(small_disk) == []


async def test_two_ingest_processes_share_one_capacity(settings, amqp, tmp_path: Path) -> None:
    store = tmp_path / "store"
    paths = [write_file(incoming_beside(store) / _name(i), os.urandom(10 * KB)) for i in range(30)]
    options = ingest_settings(settings, store, capacity_bytes=100 * KB, prefetch=4)
    async with running_ingest(options) as first:
        second = ServiceRunner(SPEC, options, http=False)  # another worker on the same schema and queue
        await second.start()
        try:
            await announce(amqp, settings, *(announcement(p, site=settings.site) for p in paths))
            await asyncio.gather(_drain(first), _drain(second))
            assert second.parts.work_consumers[0].handled > 0 and first.parts.work_consumers[0].handled > 0
            assert await counts(first.ctx.pool) == (10, 10, 0)
            assert await first.ctx.pool.fetchval("SELECT count(*) FROM waiting_announcements") == 20
            assert await first.ctx.pool.fetchval("SELECT used_bytes FROM store_usage") == 100 * KB
        finally:
            await second.stop()


async def test_store_usage_follows_the_instances(settings, tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with running_ingest(ingest_settings(settings, store)) as ingest, _client(ingest) as client:
        for i in range(3):
            await client.upload(write_file(tmp_path / _name(i), os.urandom(10 * KB)), file_type="uvh5")
        pool = ingest.ctx.pool
        assert await pool.fetchval("SELECT used_bytes FROM store_usage WHERE store = 'main'") == 30 * KB
        await pool.execute("DELETE FROM instances WHERE file_name = ANY($1::text[])", [_name(0), _name(1)])
        assert await pool.fetchval("SELECT used_bytes FROM store_usage WHERE store = 'main'") == 10 * KB
