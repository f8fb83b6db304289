"""Store configuration and the choice of a store for a new file."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.ingest.stores import (
    NoStoreAvailable,
    StoreConfig,
    StoreState,
    StoreUsage,
    choose_store,
    ensure_store_layout,
    measure_usage,
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
    assert choose_store(stores, usage, 2 * GB).name == "big"
    assert choose_store(stores, usage, GB).name == "full"


def test_disk_free_space_limits_room_too() -> None:
    usage = StoreUsage(used_bytes=0, disk_free_bytes=GB)
    assert usage.room_bytes(_store("a")) == GB
    assert StoreUsage(used_bytes=11 * GB, disk_free_bytes=GB).room_bytes(_store("a")) == 0


def test_no_store_available_says_why_each_store_was_passed_over() -> None:
    stores = [_store("ro", "read-only"), _store("drive", "sneaker"), _store("off", "disabled"), _store("a")]
    usage = {"a": StoreUsage(used_bytes=10 * GB - 5, disk_free_bytes=GB)}
    with pytest.raises(NoStoreAvailable) as refused:
        choose_store(stores + [_store("new")], usage, 6)
    message = str(refused.value)
    for reason in (
        "'ro' is read-only",
        "'drive' is sneaker",
        "'off' is disabled",
        "'a' has room for 5 bytes",
        "'new' has no usage measurement yet",
        "file of 6 bytes",
    ):
        assert reason in message
    with pytest.raises(NoStoreAvailable, match="no stores are configured"):
        choose_store([], {}, 1)


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


def test_layout_and_measured_usage(tmp_path: Path) -> None:
    store = StoreConfig(name="local", root=tmp_path, capacity_bytes=GB)
    ensure_store_layout(store)
    ensure_store_layout(store)
    assert store.staging_dir.is_dir() and store.main_dir.is_dir()
    usage = measure_usage(store, tracked_used_bytes=123)
    assert usage.used_bytes == 123 and usage.disk_free_bytes > 0
    missing = StoreConfig(name="gone", root=tmp_path / "unmounted", capacity_bytes=GB)
    with pytest.raises(FileNotFoundError, match="mount the disk"):
        ensure_store_layout(missing)
