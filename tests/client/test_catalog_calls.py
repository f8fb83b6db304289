"""The client's catalog calls against the running catalog: typed answers, search pages by cursor, refusals."""

from __future__ import annotations

import pytest

from shared.api.catalog import CatalogFile, ObservationSummary, SearchPage, SessionSummary
from shared.auth import Role
from shared.client import ClientError, ObsflowClient, ServerUnavailable, Site
from tests.client.site import ClientSite, instance_at
from tests.infra import free_port_block

pytestmark = pytest.mark.asyncio(loop_scope="package")


def _names(events: list) -> list[str]:
    return [e.payload.name for e in events]


async def test_a_file_and_its_copies_at_every_site(client_site: ClientSite) -> None:
    night = client_site.night(2)
    name = night[0].payload.name  # type: ignore[attr-defined]
    here = client_site.settings.site
    await client_site.catalogued(*night, instance_at(name, "nrao", "/data/x"), instance_at(name, here, "/local/x"))
    async with client_site.client(Role.READ_ONLY) as client:
        found = await client.catalog_file(name)
        assert isinstance(found, CatalogFile)
        assert (found.name, found.size, found.n_instances, found.instance_sites) == (name, 1000, 2, ["nrao", here])
        assert found.created_at.tzinfo is not None and found.start_jd == night[0].payload.start_jd  # type: ignore
        copies = await client.locate(name)
        assert copies.file == name and copies.site == here
        assert [(c.site, c.path, c.local) for c in copies.instances] == [(here, "/local/x", True),
                                                                          ("nrao", "/data/x", False)]
        observation = await client.observation(found.observation_id or "")
        assert observation.files == [name] and observation.n_files == 1
        recent = await client.recent_files(5)
        assert all(isinstance(f, CatalogFile) for f in recent) and len(recent) <= 5


async def test_search_pages_follow_the_cursor_without_overlap(client_site: ClientSite) -> None:
    night = client_site.night(7)
    await client_site.catalogued(*night)
    prefix = night[0].payload.name[:len("zen.2459200.")]  # type: ignore[attr-defined]
    start, end = night[0].payload.start_jd, night[-1].payload.start_jd  # type: ignore[attr-defined]
    query = {"and": [{"name": {"matches": f"{prefix}%"}}, {"start_jd": {"between": [start, end]}}]}
    async with client_site.client(Role.READ_ONLY) as client:
        first = await client.search(query, limit=3)
        assert isinstance(first, SearchPage) and len(first.results) == 3 and first.next_cursor is not None
        second = await client.search(query, limit=3, cursor=first.next_cursor)
        assert [f.name for f in second.results] == _names(night)[3:6]
        pages = [page async for page in client.search_pages(query, page_size=3)]
        assert [len(p.results) for p in pages] == [3, 3, 1] and pages[-1].next_cursor is None
        assert [f.name async for f in client.search_all(query, page_size=2)] == _names(night)
        by_offset = await client.search(query, limit=2, offset=5)
        assert [f.name for f in by_offset.results] == _names(night)[5:]

        sessions = await client.search({"start_jd": {"between": [start, end]}}, target="sessions")
        assert [type(s) for s in sessions.results] == [SessionSummary]
        assert sessions.results[0].n_observations == 7 and sessions.results[0].status == "open"
        observations = [o async for o in client.search_all({"session_id": {"is": sessions.results[0].session_id}},
                                                            target="observations", page_size=5)]
        assert all(isinstance(o, ObservationSummary) for o in observations) and len(observations) == 7


async def test_sessions_list_show_and_close(client_site: ClientSite) -> None:
    night = client_site.night(3)
    await client_site.catalogued(*night)
    session_id = f"{night[0].payload.start_jd:.5f}"  # type: ignore[attr-defined]
    async with client_site.client(Role.ADMIN) as admin:
        session = await admin.session(session_id)
        assert (session.status, session.n_observations, session.n_files) == ("open", 3, 3)
        assert session_id in [s.session_id for s in await admin.sessions(status="open", limit=1000)]
        closed = await admin.close_session(session_id)
        assert closed.session_id == session_id and closed.files == 3 and closed.closed_at.tzinfo is not None
        assert (await admin.session(session_id)).status == "closed"
        assert session_id in [s.session_id for s in await admin.sessions(status="closed", limit=1000)]
        with pytest.raises(ClientError) as again:
            await admin.close_session(session_id)
        assert (again.value.status, again.value.code) == (409, "already_closed")


async def test_refusals_say_what_was_wrong_with_the_servers_code(client_site: ClientSite) -> None:
    async with client_site.client(Role.READ_ONLY) as reader:
        with pytest.raises(ClientError) as bad:
            await reader.search({"and": [{"size": {">": "big"}}]})
        assert (bad.value.status, bad.value.code) == (400, "invalid_search")
        assert bad.value.details["path"] == '$.and[0].size[">"]'
        assert str(bad.value).startswith("takes a whole number") and "at $.and[0].size" in str(bad.value)
        with pytest.raises(ClientError) as unknown:
            await reader.catalog_file("zen.0.nothing.uvh5")
        assert (unknown.value.status, unknown.value.code) == (404, "not_found")
        assert "no file 'zen.0.nothing.uvh5' in this site's catalog" in str(unknown.value)
        with pytest.raises(ClientError) as forbidden:
            await reader.close_session("2459122.30000")
        assert forbidden.value.status == 403 and "needs admin" in str(forbidden.value)
    async with ObsflowClient(client_site.site, None) as anonymous:
        with pytest.raises(ClientError) as anonymous_refused:
            await anonymous.sessions()
        assert anonymous_refused.value.status == 401 and "obsflow accounts token" in str(anonymous_refused.value)
    nobody = Site.at(f"http://127.0.0.1:{free_port_block()}")
    async with ObsflowClient(nobody, client_site.token()) as lost:
        with pytest.raises(ServerUnavailable, match="cannot reach the catalog service at http://127.0.0.1:"):
            await lost.sessions()
    with pytest.raises(RuntimeError, match="async with ObsflowClient"):
        await client_site.client().sessions()
