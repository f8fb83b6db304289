"""Staging locks: one writer per upload id, in this process and across processes (PostgreSQL advisory locks)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.ingest.hygiene import StagingBusy, StagingLocks
from shared.settings import Settings


@pytest.fixture
async def locks(settings: Settings) -> AsyncIterator[StagingLocks]:
    holder = await StagingLocks.connect(settings.database_url, settings.schema_for("ingest"))
    yield holder
    await holder.close()


@pytest.fixture
async def other_process(settings: Settings) -> AsyncIterator[StagingLocks]:
    """Another worker's locks: a session of its own on the same database and schema."""
    holder = await StagingLocks.connect(settings.database_url, settings.schema_for("ingest"))
    yield holder
    await holder.close()


async def _is_free(locks: StagingLocks, upload_id: str) -> bool:
    async with locks.hold_many([upload_id]) as taken:
        return upload_id in taken


async def test_a_second_writer_in_this_process_is_refused(locks: StagingLocks, other_process: StagingLocks) -> None:
    async with locks.hold("u1"):
        with pytest.raises(StagingBusy, match="u1 is being staged by another worker"):
            async with locks.hold("u1"):
                pass
        async with locks.hold_many(["u1", "u2"]) as taken:
            assert taken == {"u2"}
        # The refused attempts released nothing: the first writer still holds u1 against everyone.
        assert not await _is_free(other_process, "u1")
        with pytest.raises(StagingBusy):
            async with locks.hold("u1"):
                pass
    assert await _is_free(other_process, "u1")


async def test_a_lock_held_by_another_session_is_refused_until_released(
    locks: StagingLocks, other_process: StagingLocks
) -> None:
    async with other_process.hold("u1"):
        with pytest.raises(StagingBusy, match="u1"):
            async with locks.hold("u1"):
                pass
    async with locks.hold("u1"):
        assert not await _is_free(other_process, "u1")
    async with other_process.hold("u1"):
        pass


async def test_hold_many_yields_only_the_ids_it_got_and_releases_them(
    locks: StagingLocks, other_process: StagingLocks
) -> None:
    async with other_process.hold_many(["a", "c"]) as theirs:
        assert theirs == {"a", "c"}
        async with locks.hold_many(["a", "b", "c", "d"]) as mine:
            assert mine == {"b", "d"}
            assert not await _is_free(other_process, "b") and not await _is_free(other_process, "d")
        assert await _is_free(other_process, "b") and await _is_free(other_process, "d")
        assert not await _is_free(locks, "a")
    async with locks.hold_many(["a", "b", "c", "d"]) as mine:
        assert mine == {"a", "b", "c", "d"}
    async with locks.hold_many([]) as mine:
        assert mine == set()


async def test_the_same_id_in_other_schemas_is_another_lock(settings: Settings, locks: StagingLocks) -> None:
    elsewhere = await StagingLocks.connect(settings.database_url, settings.schema_for("elsewhere"))
    try:
        async with locks.hold("u1"):
            assert await _is_free(elsewhere, "u1")
    finally:
        await elsewhere.close()
