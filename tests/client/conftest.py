"""One site for the client's tests (three services take seconds to start): started once for tests/client, on the
event loop the tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.client.site import ClientSite, client_site_settings


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def client_site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ClientSite]:
    """Ingest, catalog and scheduler of a private site, running in this process."""
    root = tmp_path_factory.mktemp("client-site")
    site = ClientSite(client_site_settings(root), root)
    try:
        await site.start()
        yield site
    finally:
        await site.stop()
