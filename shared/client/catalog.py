"""The catalog's calls: files at every site, their copies, observations, sessions and searches (page by page)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, overload
from urllib.parse import quote

from shared.api.catalog import (
    SEARCH_PAGES,
    CatalogFile,
    Conflict,
    ConflictList,
    FileInstances,
    FileList,
    Observation,
    ObservationSummary,
    SearchPage,
    Session,
    SessionClosure,
    SessionList,
    SessionStatus,
    SessionSummary,
)
from shared.client.transport import Transport

Query = Mapping[str, Any]
Target = Literal["files", "observations", "sessions"]


def _key(value: str) -> str:
    return quote(value, safe="")


class CatalogCalls:
    """The catalog service's calls."""

    _transport: Transport

    async def catalog_file(self, name: str) -> CatalogFile:
        """A file the catalog knows, minted at this site or another, with how many copies exist and where."""
        return await self._transport.call("catalog", "GET", f"/files/{_key(name)}", CatalogFile)

    async def recent_files(self, count: int = 20) -> list[CatalogFile]:
        """The `count` files minted most recently (1-10000), newest first."""
        return (await self._transport.call("catalog", "GET", "/files", FileList, params={"recent": str(count)})).results

    async def locate(self, name: str) -> FileInstances:
        """Every copy of a file, at this site (first) and at the others."""
        return await self._transport.call("catalog", "GET", f"/files/{_key(name)}/instances", FileInstances)

    async def observation(self, observation_id: str) -> Observation:
        """One observation and the names of its files."""
        return await self._transport.call("catalog", "GET", f"/observations/{_key(observation_id)}", Observation)

    async def sessions(self, *, status: SessionStatus | None = None, limit: int = 100) -> list[SessionSummary]:
        """The latest observing sessions, newest first (only open or only closed ones with `status`)."""
        params = {"limit": str(limit), **({"status": status} if status else {})}
        return (await self._transport.call("catalog", "GET", "/sessions", SessionList, params=params)).results

    async def session(self, session_id: str) -> Session:
        """One observing session."""
        return await self._transport.call("catalog", "GET", f"/sessions/{_key(session_id)}", Session)

    async def conflicts(self, limit: int = 100) -> list[Conflict]:
        """Names minted by two sites with different contents (the file kept here and the other), newest first."""
        return (await self._transport.call("catalog", "GET", "/conflicts", ConflictList,
                                           params={"limit": str(limit)})).results

    async def close_session(self, session_id: str) -> SessionClosure:
        """Close an open session now (admin): its session.closed event starts the nightly workflows."""
        return await self._transport.call("catalog", "POST", f"/sessions/{_key(session_id)}/close", SessionClosure)

    @overload
    async def search(self, query: Query | None = None, *, target: Literal["files"] = "files", limit: int = 100,
                     cursor: str | None = None, offset: int | None = None) -> SearchPage[CatalogFile]: ...

    @overload
    async def search(self, query: Query | None = None, *, target: Literal["observations"], limit: int = 100,
                     cursor: str | None = None, offset: int | None = None) -> SearchPage[ObservationSummary]: ...

    @overload
    async def search(self, query: Query | None = None, *, target: Literal["sessions"], limit: int = 100,
                     cursor: str | None = None, offset: int | None = None) -> SearchPage[SessionSummary]: ...

    async def search(self, query: Query | None = None, *, target: Target = "files", limit: int = 100,
                     cursor: str | None = None, offset: int | None = None) -> SearchPage[Any]:
        """One page of a search (docs/catalog-search.md): at most `limit` results, after `cursor` (the previous
        page's next_cursor) or `offset`. A search that cannot run is a ClientError with code invalid_search and
        `details["path"]`, the clause at fault."""
        body: dict[str, Any] = {"target": target, "query": dict(query or {}), "limit": limit}
        if cursor is not None:
            body["cursor"] = cursor
        if offset is not None:
            body["offset"] = offset
        return await self._transport.call("catalog", "POST", "/search", SEARCH_PAGES[target], json=body)

    @overload
    def search_pages(self, query: Query | None = None, *, target: Literal["files"] = "files",
                     page_size: int = 1000) -> AsyncIterator[SearchPage[CatalogFile]]: ...

    @overload
    def search_pages(self, query: Query | None = None, *, target: Literal["observations"],
                     page_size: int = 1000) -> AsyncIterator[SearchPage[ObservationSummary]]: ...

    @overload
    def search_pages(self, query: Query | None = None, *, target: Literal["sessions"],
                     page_size: int = 1000) -> AsyncIterator[SearchPage[SessionSummary]]: ...

    async def search_pages(self, query: Query | None = None, *, target: Target = "files",
                           page_size: int = 1000) -> AsyncIterator[SearchPage[Any]]:
        """Every page of a search, following the catalog's cursor (pages never overlap)."""
        cursor: str | None = None
        while True:
            page = await self.search(query, target=target, limit=page_size, cursor=cursor)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @overload
    def search_all(self, query: Query | None = None, *, target: Literal["files"] = "files",
                   page_size: int = 1000) -> AsyncIterator[CatalogFile]: ...

    @overload
    def search_all(self, query: Query | None = None, *, target: Literal["observations"],
                   page_size: int = 1000) -> AsyncIterator[ObservationSummary]: ...

    @overload
    def search_all(self, query: Query | None = None, *, target: Literal["sessions"],
                   page_size: int = 1000) -> AsyncIterator[SessionSummary]: ...

    async def search_all(self, query: Query | None = None, *, target: Target = "files",
                         page_size: int = 1000) -> AsyncIterator[Any]:
        """Every result of a search, page after page."""
        async for page in self.search_pages(query, target=target, page_size=page_size):
            for row in page.results:
                yield row
