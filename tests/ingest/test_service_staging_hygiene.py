"""Staging hygiene in the running service removes only what lies beneath the store root (issue 8, item 15).

The start-up sweep and the periodic expiry meet links planted in the staging area: a link is removed itself, a tree
holding links out is removed without following them, and a staging area that is itself a link elsewhere is left
alone (logged), while the canary files the links point to survive. Empty, '/' and relative store roots are refused
before the service touches any file (here, and in tests/ingest/test_ingest_staging.py for StagingArea itself).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import xxhash
from prometheus_client import CollectorRegistry

from services.ingest.hygiene import sweep_staging
from services.ingest.storage import StoreSet
from services.ingest.stores import StoreConfig
from shared.auth import Principal, Role, issue_token
from shared.client import ObsflowClient
from shared.errors import ConfigurationError
from shared.runner import ServiceRunner
from shared.safe_paths import UnsafeRoot
from shared.settings import Settings, StoreSettings, load_settings
from tests.conftest import wait_for
from tests.ingest.service_support import counts, ingest_settings, running_ingest, staged_entries

pytestmark = pytest.mark.usefixtures("drop_schemas")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    (directory / "victim").mkdir(parents=True)
    (directory / "canary").write_bytes(b"must survive")
    (directory / "victim" / "canary").write_bytes(b"must survive")
    return directory


def _survived(outside: Path) -> bool:
    return (outside / "canary").read_bytes() == (outside / "victim" / "canary").read_bytes() == b"must survive"


def _client(runner: ServiceRunner) -> ObsflowClient:
    secret = runner.settings.auth_secret.get_secret_value()  # type: ignore[union-attr]
    token = issue_token(secret, Principal("alice", Role.READ_APPEND), 3600)
    return ObsflowClient(f"http://127.0.0.1:{runner.settings.http_port('ingest')}", token)


async def test_the_start_up_sweep_removes_planted_links_never_their_targets(
    settings: Settings, tmp_path: Path, outside: Path
) -> None:
    store = tmp_path / "store"
    (store / "staging" / "crashed-tree" / "sub").mkdir(parents=True)
    (store / "staging" / "crashed-tree" / "sub" / "out").symlink_to(outside)
    (store / "staging" / "crashed-tree" / "canary").symlink_to(outside / "canary")
    (store / "staging" / "linked-dir").symlink_to(outside / "victim")
    (store / "staging" / "linked-file").symlink_to(outside / "canary")
    async with running_ingest(ingest_settings(settings, store)):
        assert staged_entries(store) == []
    assert _survived(outside)


async def test_a_staging_area_that_is_a_link_elsewhere_is_never_swept(
    settings: Settings, tmp_path: Path, outside: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "staging").symlink_to(outside)  # sweeping it would remove outside/victim and outside/canary
    site = ingest_settings(settings, store, upload_expiry_s=0.2, expiry_interval_s=0.1)
    async with running_ingest(site) as ingest:  # the start-up sweep refused (logged) and the service runs
        stores = StoreSet.from_settings(site.stores, CollectorRegistry())
        assert await sweep_staging(ingest.ctx.pool, ingest.ctx.schema, stores) == 0
        assert await sweep_staging(ingest.ctx.pool, ingest.ctx.schema, stores, older_than_s=0.1) == 0
    assert _survived(outside)


async def test_expiry_removes_a_link_planted_in_place_of_an_upload(
    settings: Settings, tmp_path: Path, outside: Path
) -> None:
    store = tmp_path / "store"
    options = {"upload_expiry_s": 0.5, "expiry_interval_s": 0.1}
    async with running_ingest(ingest_settings(settings, store, **options)) as ingest:
        async with _client(ingest) as client:
            upload = await client.announce("zen.2459122.30000.sum.uvh5", 5,
                                           f"xxh3-128:{xxhash.xxh3_128_hexdigest(b'hello')}", "uvh5")
        (store / "staging" / upload.upload_id).symlink_to(outside / "victim")
        await wait_for(lambda: _no_uploads(ingest), timeout_s=10)
        await wait_for(lambda: not staged_entries(store), timeout_s=10)
    assert _survived(outside)


async def _no_uploads(ingest: ServiceRunner) -> bool:
    return (await counts(ingest.ctx.pool))[2] == 0


@pytest.mark.parametrize("root", ["", "/"])
def test_a_store_root_that_is_empty_or_slash_is_refused_by_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: str
) -> None:
    config = tmp_path / "obsflow.toml"
    config.write_text(f'[[stores]]\nname = "main"\nroot = "{root}"\n')
    with pytest.raises(ConfigurationError, match="give it its own directory"):
        load_settings(config)


def test_a_store_set_refuses_root_slash_before_touching_anything() -> None:
    # (A relative or empty root never gets this far: StoreConfig refuses it, and settings resolve relative roots.)
    with pytest.raises(UnsafeRoot, match="'/'"):
        StoreSet([StoreConfig(name="main", root=Path("/"), capacity_bytes=0)], CollectorRegistry())


def test_relative_store_roots_are_made_absolute_once_at_load_and_a_relative_data_dir_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "obsflow.toml"
    config.write_text(f'data_dir = "{tmp_path}/var"\n[[stores]]\nname = "main"\nroot = "stores/main"\n')
    settings = load_settings(config)
    assert settings.data_dir == tmp_path / "var" and settings.stores[0].root == tmp_path / "stores" / "main"
    assert StoreSettings(name="x", root=Path("/data")).root == Path("/data")
    # A relative data directory would be another one from every working directory (and another auth secret)...
    monkeypatch.setenv("OBSFLOW_DATA_DIR", "var")
    with pytest.raises(ConfigurationError, match="data_dir: .*must be an absolute path"):
        load_settings()
    # ...but in a config file it names the same one from everywhere: relative to the file (tests/firsthour).
    monkeypatch.delenv("OBSFLOW_DATA_DIR")
    config.write_text('data_dir = "var"\n')
    assert load_settings(config).data_dir == tmp_path / "var"
