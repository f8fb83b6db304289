"""Settings: the TOML file, the environment above it (deep-merged), clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigurationError
from shared.settings import load_settings

CONFIG = """
site = "karoo"
[bus]
prefix = "karoo"
stream_max_age = "7D"
[[stores]]
name = "fast"
root = "/data/fast"
capacity_bytes = 1000
[services.catalog]
session_gap_days = 0.1
"""


def test_file_values_are_kept_and_the_environment_overrides_field_by_field(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("OBSFLOW_BUS__PREFIX", "from-env")
    monkeypatch.setenv("OBSFLOW_HTTP_BASE_PORT", "9000")
    settings = load_settings(path)
    assert settings.site == "karoo"
    assert settings.bus.prefix == "from-env"
    assert settings.bus.stream_max_age == "7D"  # the file's other [bus] values survive
    assert [(s.name, str(s.root), s.capacity_bytes) for s in settings.stores] == [("fast", "/data/fast", 1000)]
    assert settings.service_options("catalog") == {"session_gap_days": 0.1}
    assert settings.http_port("monitor") == 9004
    assert settings.schema_for("ingest") == "karoo_ingest"


def test_no_stores_configured_gives_one_under_the_data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OBSFLOW_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert [(s.name, s.root) for s in settings.stores] == [("main", tmp_path / "stores" / "main")]


@pytest.mark.parametrize(
    ("text", "message"),
    [("site = 'Bad Site'", "site: Value error, a site name is 1-40 lowercase"), ("site = ", "cannot read config file")],
)
def test_bad_settings_are_refused_with_the_setting_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        load_settings(path)
