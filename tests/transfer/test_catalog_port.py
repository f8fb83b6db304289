"""CatalogSearch, the transfer service's port to its site's catalog, against a real running catalog."""

from __future__ import annotations

import pytest

from services.transfer.catalog_port import CatalogSearch, CatalogUnavailable, SearchRefused, service_token
from shared.auth.secrets import site_secret
from shared.errors import PermanentError, TransientError
from shared.settings import Settings
from tests.catalog.catalog_harness import (
    NIGHT_1,
    delete_topology,
    instance_created,
    minted,
    night,
    publish,
    running_catalog,
)
from tests.transfer.harness import transfer_settings

pytestmark = pytest.mark.usefixtures("drop_schemas")
UVH5 = {"file_type": {"is": "uvh5"}}


def _catalog(settings: Settings, secret: str | None = None) -> CatalogSearch:
    return CatalogSearch(f"http://127.0.0.1:{settings.http_port('catalog')}",
                         service_token(secret or site_secret(settings)), timeout_s=10)


async def test_searches_of_a_running_catalog(settings: Settings, amqp) -> None:
    settings = transfer_settings(settings)
    here = settings.site
    files = [minted(jd) for jd in night(NIGHT_1, 10)]
    names = [f.payload.name for f in files]  # type: ignore[attr-defined]
    held = names[:8]  # this site holds 8 of the 10; nrao holds 3 of those already
    copies = [instance_created(n, here, f"/{n}") for n in held]
    copies += [instance_created(n, "nrao", f"/{n}") for n in held[:3]]
    catalog = _catalog(settings)
    try:
        async with running_catalog(settings) as runner:
            await publish(amqp, settings, [*files, *copies])
            await runner.parts.stream_consumers[0].drain()

            await catalog.check(UVH5)
            await catalog.check({})  # everything: a search of no clause
            lacking = [n async for n in catalog.files_matching(UVH5, held_at=here, lacking_at="nrao", page=2)]
            assert lacking == held[3:]  # every page (2, 2, 1), in the catalog's order, none twice
            everything = [n async for n in catalog.files_matching({}, held_at=here, lacking_at="penn", page=3)]
            assert everything == held
            one_night = {"name": {"in": names[4:]}}
            assert [n async for n in catalog.files_matching(one_night, held_at=here, lacking_at="nrao")] == held[4:]

            asked = [*names, "zen.nope.uvh5", names[0]]
            assert await catalog.names_matching(UVH5, asked, held_at=here) == set(held)
            assert await catalog.names_matching(UVH5, asked, held_at="nrao") == set(held[:3])
            assert await catalog.names_matching({"size": {">": 5000}}, asked, held_at=here) == set()
            catalog.names_per_request = 3  # chunk boundaries, each chunk one search
            assert await catalog.names_matching(one_night, asked, held_at=here) == set(held[4:])
            catalog.names_per_request = 500
            many = [f"zen.absent.{i:05d}.uvh5" for i in range(1200)] + names
            assert await catalog.names_matching(UVH5, many, held_at=here) == set(held)
            assert await catalog.names_matching(UVH5, [], held_at=here) == set()
    finally:
        await catalog.close()
        await delete_topology(settings)


async def test_refusals_and_outages(settings: Settings) -> None:
    settings = transfer_settings(settings)
    catalog = _catalog(settings)
    forged = _catalog(settings, secret="another-site-secret-of-32-bytes-or-more!")
    try:
        async with running_catalog(settings):
            with pytest.raises(SearchRefused) as refused:
                await catalog.check({"size": {">": "big"}})
            assert isinstance(refused.value, PermanentError)
            assert refused.value.path == '$.size[">"]' and "whole number" in refused.value.message
            with pytest.raises(SearchRefused, match="unknown clause 'colour'"):
                await catalog.check({"colour": {"is": "red"}})
            with pytest.raises(SearchRefused, match="too big to combine"):  # fine alone, too deep once combined
                await catalog.check(_nested(UVH5, 32))
            await catalog.check(_nested(UVH5, 30))
            with pytest.raises(SearchRefused):
                await catalog.names_matching({"size": {"between": [2, 1]}}, ["x"], held_at=settings.site)
            with pytest.raises(CatalogUnavailable, match="same site secret"):
                await forged.check(UVH5)
        with pytest.raises(CatalogUnavailable, match="cannot reach the catalog") as down:
            await catalog.check(UVH5)
        assert isinstance(down.value, TransientError)
        with pytest.raises(CatalogUnavailable):
            [n async for n in catalog.files_matching(UVH5, held_at=settings.site, lacking_at="nrao")]
    finally:
        await catalog.close()
        await forged.close()
        await delete_topology(settings)


def _nested(clause: dict, levels: int) -> dict:
    for _ in range(levels):
        clause = {"and": [clause]}
    return clause
