"""Store configuration and the choice of a store for a new file."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.ingest.stores import (
    NoRoom,
    StoreConfig,
    StoreState,
    StoreUsage,
    admit_at_mint,
    choose_store,
    ensure_store_layout,
    place_files,
)

GB = 10**9


def _store(name: str, state: str = "online", capacity: int = 10 * GB) -> StoreConfig:
    return StoreConfig(name=name, root=Path(f"/data/{name}"), capacity_bytes=capacity, state=StoreState(state))


def test_first_online_store_with_room_is_chosen() -> None:
    stores = [_store("ro", "read-only"), _store("full"), _store("big"), _store("bigger")]
    usage = {
        "ro": StoreUsage(used_bytes=0, disk_free_bytes=100 * GB),
        "full": StoreUsage(used_bytes=9 * GB, disk_free_bytes=100 * GB),
        "big": StoreUsage(used_bytes=0, disk_free_bytes=100 * GB),
        "bigger": StoreUsage(used_bytes=0, disk_free_bytes=100 * GB),
    }
    assert choose_store(stores, usage, 2 * GB) == stores[2]
    assert choose_store(stores, usage, GB) == stores[1]


def test_disk_free_space_and_reservations_limit_room() -> None:
    usage = StoreUsage(used_bytes=0, disk_free_bytes=GB)
    assert usage.room_bytes(_store("a")) == GB
    assert StoreUsage(used_bytes=11 * GB, disk_free_bytes=GB).room_bytes(_store("a")) == 0
    # Reserved bytes are promised twice over: out of the capacity and out of the disk's free space.
    assert StoreUsage(used_bytes=5 * GB, disk_free_bytes=100 * GB, reserved_bytes=4 * GB).room_bytes(_store("a")) == GB
    assert StoreUsage(used_bytes=0, disk_free_bytes=3 * GB, reserved_bytes=2 * GB).room_bytes(_store("a")) == GB


def test_files_placed_together_count_each_other() -> None:
    stores = [_store("a", capacity=10), _store("b", capacity=15)]
    usage = {"a": StoreUsage(0, 100), "b": StoreUsage(0, 100, reserved_bytes=5)}
    placed = place_files(stores, usage, [6, 6, 6, 4])
    assert [p.name if isinstance(p, StoreConfig) else None for p in placed] == ["a", "b", None, "a"]
    assert isinstance(placed[2], NoRoom) and placed[2].size == 6
    assert "'a' has room for 4 bytes" in placed[2].reason and "'b' has room for 4 bytes" in placed[2].reason


def test_no_room_says_why_each_store_was_passed_over() -> None:
    stores = [_store("ro", "read-only"), _store("drive", "sneaker"), _store("off", "disabled"), _store("a")]
    usage = {"a": StoreUsage(used_bytes=10 * GB - 5, disk_free_bytes=GB)}
    refused = choose_store(stores + [_store("new")], usage, 6)
    assert isinstance(refused, NoRoom)
    for reason in (
        "'ro' is read-only",
        "'drive' is sneaker",
        "'off' is disabled",
        "'a' has room for 5 bytes",
        "'new' cannot be measured (is its disk mounted?)",
        "file of 6 bytes",
        "raise a capacity",
    ):
        assert reason in refused.reason
    nothing = choose_store([], {}, 1)
    assert isinstance(nothing, NoRoom) and "no stores are configured" in nothing.reason


def test_a_mint_never_takes_a_store_past_its_capacity() -> None:
    store = _store("a", capacity=100)
    # A file of exactly its reserved size changes nothing; one that grew needs the difference.
    assert admit_at_mint(store, 100, [0, 0]) == [True, True]
    assert admit_at_mint(store, 90, [5, 10, 5, -3]) == [True, False, True, True]
    # A capacity lowered below what is minted and reserved admits nothing more.
    assert admit_at_mint(store, 120, [0, -10]) == [False, False]


def test_store_config_validation() -> None:
    store = StoreConfig.model_validate(
        {"name": "karoo-1", "root": "/data/karoo-1", "capacity_bytes": 5, "state": "read-only"}
    )
    assert store.state is StoreState.READ_ONLY
    assert store.staging_dir == Path("/data/karoo-1/staging")
    assert store.main_dir == Path("/data/karoo-1/main")
    for bad in (
        {"name": "x", "root": "relative/path", "capacity_bytes": 1},
        {"name": "../x", "root": "/data", "capacity_bytes": 1},
        {"name": "x", "root": "/data", "capacity_bytes": -1},
        {"name": "x", "root": "/data", "capacity_bytes": 1, "state": "sleepy"},
        {"name": "x", "root": "/data", "capacity_bytes": 1, "colour": "blue"},
    ):
        with pytest.raises(ValidationError):
            StoreConfig.model_validate(bad)


def test_layout(tmp_path: Path) -> None:
    store = StoreConfig(name="local", root=tmp_path, capacity_bytes=GB)
    ensure_store_layout(store)
    ensure_store_layout(store)
    assert store.staging_dir.is_dir() and store.main_dir.is_dir()
    missing = StoreConfig(name="gone", root=tmp_path / "unmounted", capacity_bytes=GB)
    with pytest.raises(FileNotFoundError, match="mount the disk"):
        ensure_store_layout(missing)
