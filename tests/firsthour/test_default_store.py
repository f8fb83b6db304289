"""A zero-configuration site creates its default store; a store someone configured must exist (a missing mount is
never papered over); a fresh Kubernetes volume is a zero-configuration data directory. Paths in a config file
resolve against the file's own directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.ingest.storage import StoreSet
from shared.errors import ConfigurationError
from shared.settings import SYSTEM_DATA_DIR, Settings, StoreSettings, default_data_dir, load_settings
from tests.firsthour.made_up_site import REPO

K8S = REPO / "deploy" / "k8s"


def _prepared(settings: Settings) -> StoreSet:
    stores = StoreSet.from_settings(settings.stores, CollectorRegistry())
    stores.prepare()
    return stores


def test_a_site_without_stores_creates_its_default_store_in_an_empty_data_directory(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")
    [store] = settings.stores
    assert store.zero_config and store.root == tmp_path / "fresh" / "stores" / "main"
    _prepared(settings)
    assert (store.root / "main").is_dir() and (store.root / "staging").is_dir()
    _prepared(settings)  # and again on the next start: nothing to do


def test_a_configured_store_that_is_missing_stays_an_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, stores=[StoreSettings(name="main", root=tmp_path / "stores" / "main")])
    assert not settings.stores[0].zero_config  # the same place as the default, but someone configured it
    with pytest.raises(ConfigurationError, match="does not exist.*mount the disk"):
        _prepared(settings)
    assert not (tmp_path / "stores").exists()


def test_the_default_store_is_not_made_through_a_dangling_link(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    (tmp_path / "stores").mkdir()
    (tmp_path / "stores" / "main").symlink_to(tmp_path / "unmounted-disk")
    with pytest.raises(ConfigurationError, match="does not exist"):
        _prepared(settings)
    assert not (tmp_path / "unmounted-disk").exists()


def test_a_fresh_kubernetes_volume_is_a_zero_configuration_data_directory() -> None:
    config = next(d for d in yaml.safe_load_all((K8S / "settings.yaml").read_text()) if d["kind"] == "ConfigMap")
    data_dir = config["data"]["OBSFLOW_DATA_DIR"]
    manifests = yaml.safe_load_all((K8S / "services.yaml").read_text())
    deployments = [d for d in manifests if d and d["kind"] == "Deployment"]
    ingest = next(d for d in deployments if d["metadata"]["name"] == "obsflow-ingest")
    mounts = ingest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "data", "mountPath": data_dir} in mounts  # the volume is the data directory
    assert not any(key.startswith("OBSFLOW_STORES") for key in config["data"])  # no store configured: the default
    assert Settings(data_dir=data_dir).stores[0].zero_config


def test_relative_paths_in_a_config_file_resolve_against_its_directory(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "obsflow.toml").write_text(
        'data_dir = "data"\n'
        'credentials_dir = "/etc/obsflow/credentials"\n'
        '[[stores]]\nname = "main"\nroot = "../disks/main"\n'
        '[services.ingest]\nsource_roots = ["incoming", "/data/correlator"]\n'
        '[services.scheduler]\nscript_roots = ["pipelines", "~/scripts"]\ninput_roots = "in/a:/abs/b"\n'
    )
    monkeypatch.chdir(tmp_path)  # elsewhere: the file's directory counts, not the working directory
    for name in [k for k in os.environ if k.startswith("OBSFLOW_")]:
        monkeypatch.delenv(name)
    settings = load_settings(site / "obsflow.toml")
    assert settings.data_dir == site / "data"
    assert settings.credentials_dir == Path("/etc/obsflow/credentials")
    assert settings.stores[0].root == tmp_path / "disks" / "main" and not settings.stores[0].zero_config
    ingest, scheduler = settings.service_options("ingest"), settings.service_options("scheduler")
    assert ingest["source_roots"] == [str(site / "incoming"), "/data/correlator"]
    assert scheduler["script_roots"] == [str(site / "pipelines"), "~/scripts"]
    assert scheduler["input_roots"] == f"{site / 'in' / 'a'}:/abs/b"
    # The environment still wins over the file, and its paths are not the file's.
    monkeypatch.setenv("OBSFLOW_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_settings(site / "obsflow.toml").data_dir == tmp_path / "elsewhere"


def test_the_example_site_names_the_example_scripts_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(REPO / "examples" / "obsflow.toml")
    assert settings.service_options("scheduler")["script_roots"] == [str(REPO / "examples")]


def test_root_keeps_its_data_where_the_jobs_account_can_enter(monkeypatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_data_dir() == SYSTEM_DATA_DIR == Path("/var/lib/obsflow")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", "/home/astro")
    assert default_data_dir() == Path("/home/astro/.local/share/obsflow")
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/xdg")
    assert default_data_dir() == Path("/srv/xdg/obsflow")
