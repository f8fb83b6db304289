"""The running site the API tests share (started once for tests/api: five services take seconds to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.api.site import BackgroundSite, site_settings


@pytest.fixture(scope="package")  # stopped after the last test of tests/api, not left running for the rest
def api_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundSite]:
    """The five services of a private site, seeded, running in a thread of their own."""
    root = tmp_path_factory.mktemp("api-site")
    site = BackgroundSite(site_settings(root), root)
    try:
        site.start()
        yield site
    finally:
        site.stop()


@pytest.fixture(scope="package")
def http() -> Iterator[requests.Session]:
    """One keep-alive session for every call: a new connection per call would leave thousands of client ports in
    TIME_WAIT, which no server on this machine could bind for a minute."""
    with requests.Session() as session:
        yield session

