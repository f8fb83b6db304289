"""The running site every API test shares (started once: five services take a few seconds to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.site import BackgroundSite, site_settings


@pytest.fixture(scope="session")
def api_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundSite]:
    """The five services of a private site, seeded, running in a thread of their own."""
    root = tmp_path_factory.mktemp("api-site")
    site = BackgroundSite(site_settings(root), root)
    try:
        site.start()
        yield site
    finally:
        site.stop()

