"""The announced-observation way in: minted exactly once, refusals as events, nothing left in staging."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import xxhash

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


def xxh3(data: bytes) -> str:
    return f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def src(store_root: Path) -> Path:
    """Where the instrument writes: the site's default source root."""
    return incoming_beside(store_root)


@pytest.fixture
async def ingest(settings, store_root: Path) -> AsyncIterator[ServiceRunner]:
    async with running_ingest(ingest_settings(settings, store_root, max_file_bytes=10_000)) as runner:
        yield runner


async def _drain(runner: ServiceRunner) -> None:
    await runner.parts.work_consumers[0].drain(timeout_s=60)


async def test_200_announcements_published_twice_mint_200_files_once_each(
    ingest: ServiceRunner, settings, amqp, src: Path, store_root: Path
) -> None:
    channel = await amqp.channel()
    caught = await channel.declare_queue(exclusive=True, auto_delete=True)
    await caught.bind(f"{settings.bus.prefix}.events", routing_key="*.file.minted.#")
    events = []
    for i in range(200):
        name = f"zen.{2459122 + i // 100}.{30000 + i:05d}.sum.uvh5"
        data = f"visibilities {i}".encode() * (i + 1)
        path = write_file(src / "correlator" / name, data)
        claimed = {"expected_size": len(data), "expected_checksum": xxh3(data)} if i % 2 else {}
        events.append(announcement(path, site=settings.site, **claimed))
    await announce(amqp, settings, *events, *events)
    await _drain(ingest)

    pool = ingest.ctx.pool
    assert await counts(pool) == (200, 200, 0)
    minted = await outbox_events(pool, "file.minted")
    created = await outbox_events(pool, "instance.created")
    assert len(minted) == len({e.payload.name for e in minted}) == 200
    assert len(created) == len({e.payload.file_name for e in created}) == 200
    first = next(e.payload for e in minted if e.payload.name == "zen.2459122.30000.sum.uvh5")
    assert (first.observation_id, first.start_jd, first.duration_s) == ("zen.2459122.30000", 2459122.30000, 16.1)
    assert first.uploader == "correlator" and first.origin_site == settings.site
    assert first.checksum == xxh3(b"visibilities 0")
    on_disk = sorted(p.name for p in (store_root / "main").iterdir())
    assert on_disk == sorted(e.payload.name for e in minted)
    assert staged_entries(store_root) == []

    received: set[str] = set()

    async def all_published() -> bool:
        while (message := await caught.get(fail=False, no_ack=True)) is not None:
            received.add(message.message_id)
        return len(received) == 200

    await wait_for(all_published, timeout_s=30)
    await channel.close()


async def test_checksum_mismatch_is_refused_and_staging_cleaned(
    ingest: ServiceRunner, settings, amqp, src: Path, store_root: Path
) -> None:
    path = write_file(src / "zen.2459122.30000.sum.uvh5", b"the real bytes")
    await announce(amqp, settings, announcement(path, site=settings.site, expected_checksum=xxh3(b"other bytes")))
    await _drain(ingest)
    assert await counts(ingest.ctx.pool) == (0, 0, 0)
    rejected = (await outbox_events(ingest.ctx.pool, "ingest.rejected"))[0].payload
    assert rejected.code == "checksum_mismatch" and "re-send" in rejected.reason
    assert rejected.routing_detail() == "checksum_mismatch"
    assert staged_entries(store_root) == [] and list((store_root / "main").iterdir()) == []


async def test_md5_claim_is_checked_in_the_same_pass(ingest: ServiceRunner, settings, amqp, src: Path) -> None:
    data = b"md5 partners"
    good = write_file(src / "a" / "zen.2459122.30001.sum.uvh5", data)
    bad = write_file(src / "b" / "zen.2459122.30002.sum.uvh5", data)
    md5 = f"md5:{hashlib.md5(data).hexdigest()}"
    await announce(amqp, settings, announcement(good, site=settings.site, expected_checksum=md5),
                   announcement(bad, site=settings.site, expected_checksum="md5:" + "0" * 32))
    await _drain(ingest)
    assert await ingest.ctx.pool.fetchval("SELECT md5 FROM files") == md5
    assert await rejection_codes(ingest.ctx.pool) == ["checksum_mismatch"]


async def test_duplicate_announcement_is_idempotent_and_conflicting_name_refused(
    ingest: ServiceRunner, settings, amqp, src: Path, store_root: Path
) -> None:
    name = "zen.2459122.30000.sum.uvh5"
    original = write_file(src / "night1" / name, b"first night")
    await announce(amqp, settings, announcement(original, site=settings.site))
    await _drain(ingest)
    other = write_file(src / "night2" / name, b"something else")
    await announce(
        amqp, settings,
        announcement(original, site=settings.site),  # a new event for the same bytes: nothing changes
        announcement(original, site=settings.site, expected_checksum=xxh3(b"first night")),
        announcement(other, site=settings.site),
        announcement(other, site=settings.site, expected_checksum=xxh3(b"something else")),
    )
    await _drain(ingest)
    pool = ingest.ctx.pool
    assert await counts(pool) == (1, 1, 0)
    assert len(await outbox_events(pool, "file.minted")) == 1
    assert len(await outbox_events(pool, "instance.created")) == 1
    assert await rejection_codes(pool) == ["name_conflict", "name_conflict"]
    assert (store_root / "main" / name).read_bytes() == b"first night"
    assert staged_entries(store_root) == []


@pytest.mark.parametrize(
    ("announced", "code"),
    [
        ({"path": "{tmp}/../{tmp_name}/zen.2459122.30000.sum.uvh5"}, "invalid_path"),
        ({"path": "relative/zen.2459122.30000.sum.uvh5"}, "invalid_path"),
        ({"path": "/etc/hostname"}, "invalid_path"),  # outside the source roots
        ({"name": "../../main/evil"}, "invalid_name"),
        ({"name": ".hidden"}, "invalid_name"),
        ({"name": "zen\u200b.uvh5"}, "invalid_name"),
        ({"file_type": "uv h5"}, "invalid_type"),
        ({"expected_checksum": "sha1:abc"}, "invalid_checksum"),
        ({"expected_size": 3}, "size_mismatch"),
        ({"path": "{tmp}/missing.uvh5"}, "not_found"),
        ({"path": "{tmp}/big.uvh5"}, "too_large"),
        ({"expected_size": 20_000}, "too_large"),
    ],
)
async def test_bad_announcements_are_refused_without_state_change(
    ingest: ServiceRunner, settings, amqp, src: Path, store_root: Path, announced: dict, code: str
) -> None:
    good = write_file(src / "zen.2459122.30000.sum.uvh5", b"fine bytes")
    write_file(src / "big.uvh5", b"x" * 10_001)
    fields = {"path": str(good), **announced}
    fields["path"] = fields["path"].format(tmp=src, tmp_name=src.name)
    file_type = fields.pop("file_type", "uvh5")
    await announce(amqp, settings, announcement(fields.pop("path"), site=settings.site, file_type=file_type, **fields))
    await _drain(ingest)
    pool = ingest.ctx.pool
    assert await rejection_codes(pool) == [code]
    assert await counts(pool) == (0, 0, 0)
    assert await outbox_events(pool, "file.minted") == []
    assert staged_entries(store_root) == [] and list((store_root / "main").iterdir()) == []


async def test_directory_is_one_file(ingest: ServiceRunner, settings, amqp, src: Path, store_root: Path) -> None:
    tree = src / "zen.2459122.30000.sum.ms"
    write_file(tree / "table.dat", b"rows")
    write_file(tree / "sub" / "col.dat", b"column")
    (tree / "empty").mkdir()
    await announce(amqp, settings, announcement(tree, site=settings.site, file_type="ms"))
    await _drain(ingest)
    minted = (await outbox_events(ingest.ctx.pool, "file.minted"))[0].payload
    assert minted.name == tree.name and minted.size == 10
    copy = store_root / "main" / tree.name
    assert (copy / "sub" / "col.dat").read_bytes() == b"column" and (copy / "empty").is_dir()
    assert await ingest.ctx.pool.fetchval("SELECT is_directory FROM files") is True


async def test_store_metrics_are_exported(ingest: ServiceRunner, settings, amqp, src: Path) -> None:
    path = write_file(src / "zen.2459122.30000.sum.uvh5", b"12345")
    await announce(amqp, settings, announcement(path, site=settings.site))
    await _drain(ingest)
    registry = ingest.ctx.metrics.registry
    assert registry.get_sample_value("obsflow_store_used_bytes", {"store": "main"}) == 5
    assert registry.get_sample_value("obsflow_store_free_bytes", {"store": "main"}) > 0


@pytest.mark.parametrize(
    ("prefetch", "direct_io"), [(64, True), (4, True), (64, False)],
    ids=["one-batch", "small-batches", "page-cache-writes"],
)
async def test_one_burst_of_good_bad_and_repeated_announcements_gives_each_its_own_outcome(
    settings, amqp, src: Path, store_root: Path, prefetch: int, direct_io: bool
) -> None:
    source = src / "correlator"
    contents = {f"zen.2459122.{30000 + i:05d}.sum.uvh5": f"good visibilities {i}".encode() * (i + 1) for i in range(6)}
    good = []
    for i, (name, data) in enumerate(contents.items()):
        claimed: dict[str, Any] = {"expected_size": len(data), "expected_checksum": xxh3(data)} if i % 2 else {}
        good.append(announcement(write_file(source / name, data), site=settings.site, **claimed))
    mismatch = announcement(write_file(source / "zen.2459122.30100.sum.uvh5", b"the real bytes"), site=settings.site,
                            expected_checksum=xxh3(b"other bytes"))
    write_file(source / "zen.2459122.30101.sum.uvh5", b"readable, but named through ..")
    traversal = announcement(f"{src}/../{src.name}/correlator/zen.2459122.30101.sum.uvh5",
                             site=settings.site)
    missing = announcement(source / "zen.2459122.30102.sum.uvh5", site=settings.site)
    burst = [good[0], mismatch, good[1], traversal, good[2], good[2], missing, good[3], good[4], good[5]]

    options = {"max_file_bytes": 10_000, "prefetch": prefetch, "direct_io": direct_io}
    async with running_ingest(ingest_settings(settings, store_root, **options)) as ingest:
        await announce(amqp, settings, *burst)
        await _drain(ingest)
        ctx = ingest.ctx
        assert ctx is not None
        pool = ctx.pool
        minted = await outbox_events(pool, "file.minted")
        created = await outbox_events(pool, "instance.created")
        rejected = await outbox_events(pool, "ingest.rejected")
        assert await counts(pool) == (6, 6, 0)
        assert await pool.fetchval("SELECT count(*) FROM handled_events") == 9
        assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
        duplicates = ctx.metrics.bus.duplicates.labels(ingest.parts.work_consumers[0].name)._value.get()

    names = sorted(contents)
    assert len(minted) == 6 and {e.causation_id for e in minted} == {e.event_id for e in good}
    assert sorted(e.payload.name for e in minted) == names  # type: ignore[attr-defined]
    assert sorted(e.payload.file_name for e in created) == names  # type: ignore[attr-defined]
    assert {e.causation_id: e.payload.code for e in rejected} == {  # type: ignore[attr-defined]
        mismatch.event_id: "checksum_mismatch", traversal.event_id: "invalid_path", missing.event_id: "not_found",
    }
    assert len(rejected) == 3
    assert duplicates == 1
    assert {p.name: p.read_bytes() for p in (store_root / "main").iterdir()} == contents
    assert staged_entries(store_root) == []


async def test_each_file_minted_line_of_a_batch_carries_its_own_announcements_event_id(
    ingest: ServiceRunner, settings, amqp, src: Path
) -> None:
    events = []
    for i in range(40):
        data = f"observation {i}".encode()
        path = write_file(src / "batch" / f"zen.2459123.{30000 + i:05d}.sum.uvh5", data)
        events.append(announcement(path, site=settings.site))
    by_name = {Path(e.payload.path).name: str(e.event_id) for e in events}  # type: ignore[attr-defined]
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await announce(amqp, settings, *events)  # published at once: handled in batches of several
        await _drain(ingest)
    lines = [entry for entry in logs if entry["event"] == "file_minted"]
    assert sorted(line["name"] for line in lines) == sorted(by_name)
    assert {line["name"]: line.get("event_id") for line in lines} == by_name
