"""The transfer service's read access to its own site's catalog: the catalog's search, over HTTP.

The search language has one implementation, the catalog's; the transfer service never reads the catalog's schema.
It asks with a read-only token of its own (`service_token`), signed in-process with the site's secret.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from shared.api.base import ApiModel
from shared.auth import Principal, Role, issue_token
from shared.client.errors import ClientError, ServerUnavailable
from shared.client.site import Site
from shared.client.transport import Transport
from shared.errors import PermanentError, TransientError

NAMES_PER_REQUEST = 500
SERVICE_ACCOUNT = "service:transfer"  # no real account has a ':' in its name
SERVICE_TOKEN_TTL_S = 400 * 86400.0  # the process's life; a restart (as any change of the secret needs) renews it
_PROBE_SITE = "-"  # a site name no site has: checks that a search still runs once combined with site clauses


class SearchRefused(PermanentError):
    """The catalog refused a search; the message is the catalog's own (with the clause at fault, if it said)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{message} (at {path})")
        self.message = message
        self.path = path


class CatalogUnavailable(TransientError):
    """This site's catalog cannot answer now (down, restarting, or refusing the transfer service's token)."""


class _Named(ApiModel):
    name: str


class _NamePage(ApiModel):
    """A files search page, read for the names only (the rest of each row is ignored)."""

    results: list[_Named]
    next_cursor: str | None = None


def _combined(search: dict[str, Any], *clauses: dict[str, Any]) -> dict[str, Any]:
    """`search` and-ed with `clauses` (the search `{}`, everything, is no clause: it cannot sit inside an "and")."""
    return {"and": [search, *clauses] if search else list(clauses)}


def service_token(secret: str) -> str:
    """The read-only token the transfer service searches its own catalog with."""
    return issue_token(secret, Principal(SERVICE_ACCOUNT, Role.READ_ONLY), SERVICE_TOKEN_TTL_S)


class CatalogSearch:
    """Files searches of one catalog (`base_url`, e.g. http://127.0.0.1:8471), with one keep-alive session."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        base = base_url.rstrip("/")
        # The transport speaks to a site's services; only its catalog is ever asked here.
        self._site = Site(ingest=base, catalog=base, scheduler=base)
        self._transport = Transport(self._site, token, timeout_s=timeout_s, transfer_timeout_s=timeout_s)
        self._opened = False
        self.names_per_request = NAMES_PER_REQUEST

    async def check(self, search: dict[str, Any]) -> None:
        """Return if the catalog runs `search` (alone, and combined as orders are evaluated); SearchRefused with
        the catalog's message if it refuses it; CatalogUnavailable if it cannot answer."""
        await self._page(search, limit=1)
        combined = _combined(search, {"instance-at": _PROBE_SITE}, {"no-instance-at": _PROBE_SITE},
                             {"name": {"in": [_PROBE_SITE]}})
        try:
            await self._page(combined, limit=1)
        except SearchRefused as e:
            raise SearchRefused(f"the search is valid but too big to combine with an order's own clauses "
                                f"({e.message}); make it smaller") from e

    async def names_matching(self, search: dict[str, Any], names: Sequence[str], *, held_at: str) -> set[str]:
        """The names among `names` that match `search` and have an instance at `held_at` (one request per
        `names_per_request` names)."""
        wanted = sorted(set(names))
        found: set[str] = set()
        for start in range(0, len(wanted), self.names_per_request):
            chunk = wanted[start:start + self.names_per_request]
            query = _combined(search, {"name": {"in": chunk}}, {"instance-at": held_at})
            page = await self._page(query, limit=len(chunk))  # names are unique: one page holds every match
            found.update(row.name for row in page.results)
        return found

    async def files_matching(self, search: dict[str, Any], *, held_at: str, lacking_at: str,
                             page: int = 1000) -> AsyncIterator[str]:
        """Every name matching `search` with an instance at `held_at` and none at `lacking_at`, page after page
        (the catalog's keyset cursors: a file added meanwhile shows up if it sorts after the cursor)."""
        query = _combined(search, {"instance-at": held_at}, {"no-instance-at": lacking_at})
        cursor: str | None = None
        while True:
            results = await self._page(query, limit=page, cursor=cursor)
            for row in results.results:
                yield row.name
            if results.next_cursor is None:
                return
            cursor = results.next_cursor

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._transport.close()
        self._opened = False

    async def _page(self, query: dict[str, Any], *, limit: int, cursor: str | None = None) -> _NamePage:
        if not self._opened:
            await self._transport.open()
            self._opened = True
        body: dict[str, Any] = {"target": "files", "query": query, "limit": limit}
        if cursor is not None:
            body["cursor"] = cursor
        try:
            return await self._transport.call("catalog", "POST", "/search", _NamePage, json=body)
        except ServerUnavailable as e:
            raise CatalogUnavailable(f"this site's catalog cannot search now: {e}") from e
        except ClientError as e:
            if e.status in (400, 413):  # the search itself
                path = e.details.get("path")
                raise SearchRefused(e.message, path if isinstance(path, str) else None) from e
            # 401/403 (another secret?), 404 (not a catalog at that URL): no search runs until that is fixed.
            raise CatalogUnavailable(f"this site's catalog refused the transfer service's search ({e}); check that "
                                     "both services use the same site secret") from e
