"""The catalog's HTTP API under /api/v1: files, their instances, observations, sessions, search (JSON)."""

from __future__ import annotations

from aiohttp import web

from services.catalog import reads
from services.catalog.conflicts import MAX_CONFLICTS, list_conflicts
from services.catalog.options import CatalogOptions
from services.catalog.search import SearchError
from services.catalog.session_closing import SessionAlreadyClosed, UnknownSession, close_session
from shared.api.catalog import Conflict, ConflictList, FileInstances, FileList, SessionClosure, SessionList
from shared.events.types import SessionClosed
from shared.http.answers import model_response
from shared.http.auth import Role, requires
from shared.http.body import json_object
from shared.http.errors import json_error
from shared.service import ServiceContext

PREFIX = "/api/v1"
SEARCH_KEYS = {"target", "query", "limit", "cursor", "offset"}
DEFAULT_RECENT = 20


# (method, path under PREFIX, CatalogApi handler, minimum role); services/catalog/openapi.py describes each.
ROUTE_TABLE: tuple[tuple[str, str, str, Role], ...] = (
    ("GET", "/files", "recent_files", Role.READ_ONLY),
    ("GET", "/files/{name}", "file", Role.READ_ONLY),
    ("GET", "/files/{name}/instances", "file_instances", Role.READ_ONLY),
    ("GET", "/observations/{observation_id}", "observation", Role.READ_ONLY),
    ("GET", "/sessions", "sessions", Role.READ_ONLY),
    ("GET", "/sessions/{session_id}", "session", Role.READ_ONLY),
    ("POST", "/sessions/{session_id}/close", "close_session", Role.ADMIN),
    ("POST", "/search", "search", Role.READ_ONLY),
    ("GET", "/conflicts", "conflicts", Role.READ_ONLY),
)


def catalog_routes(ctx: ServiceContext, options: CatalogOptions) -> list[web.RouteDef]:
    """Every route of the API, each guarded by its minimum role."""
    api = CatalogApi(ctx, options)
    return [web.route(method, PREFIX + path, requires(role)(getattr(api, name)))
            for method, path, name, role in ROUTE_TABLE]


class CatalogApi:
    """The handlers, bound to the service's pool and settings."""

    def __init__(self, ctx: ServiceContext, options: CatalogOptions) -> None:
        self._ctx = ctx
        self._pool = ctx.pool
        self._site = ctx.settings.site
        self._options = options

    async def file(self, request: web.Request) -> web.Response:
        """GET /files/{name}."""
        found = await reads.file_by_name(self._pool, request.match_info["name"])
        return model_response(found) if found else _not_found("file", request.match_info["name"])

    async def recent_files(self, request: web.Request) -> web.Response:
        """GET /files?recent=N."""
        count = _int_param(request, "recent", DEFAULT_RECENT, reads.MAX_RECENT)
        if isinstance(count, web.Response):
            return count
        return model_response(FileList(results=await reads.recent_files(self._pool, count)))

    async def file_instances(self, request: web.Request) -> web.Response:
        """GET /files/{name}/instances: copies at this site first, then the others."""
        name = request.match_info["name"]
        instances = await reads.instances_of(self._pool, name, self._site)
        if not instances and await reads.file_by_name(self._pool, name) is None:
            return _not_found("file", name)
        return model_response(FileInstances(file=name, site=self._site, instances=instances))

    async def observation(self, request: web.Request) -> web.Response:
        """GET /observations/{observation_id}."""
        key = request.match_info["observation_id"]
        found = await reads.observation_by_id(self._pool, key)
        return model_response(found) if found else _not_found("observation", key)

    async def sessions(self, request: web.Request) -> web.Response:
        """GET /sessions?status=open|closed&limit=N."""
        status = request.query.get("status")
        if status not in (None, "open", "closed"):
            return json_error(400, "bad_request", f"status is 'open' or 'closed', got {status!r}")
        limit = _int_param(request, "limit", 100, reads.MAX_RECENT)
        if isinstance(limit, web.Response):
            return limit
        return model_response(SessionList(results=await reads.list_sessions(self._pool, status, limit)))

    async def session(self, request: web.Request) -> web.Response:
        """GET /sessions/{session_id}."""
        key = request.match_info["session_id"]
        found = await reads.session_by_id(self._pool, key)
        return model_response(found) if found else _not_found("session", key)

    async def close_session(self, request: web.Request) -> web.Response:
        """POST /sessions/{session_id}/close: close it now and emit session.closed."""
        session_id = request.match_info["session_id"]
        try:
            event = await close_session(self._ctx, session_id)
        except UnknownSession as e:
            return json_error(404, "not_found", str(e))
        except SessionAlreadyClosed as e:
            return json_error(409, "already_closed", str(e))
        if event is None:  # only a sweep's conditional close returns None
            return json_error(409, "busy", f"session {session_id} received an observation; try again")
        payload = event.payload
        return model_response(SessionClosure(
            session_id=session_id, closed_at=event.occurred_at, event_id=str(event.event_id),
            files=len(payload.file_names) if isinstance(payload, SessionClosed) else 0,
        ))

    async def conflicts(self, request: web.Request) -> web.Response:
        """GET /conflicts?limit=N: names minted by two sites with different contents, newest first."""
        limit = _int_param(request, "limit", 100, MAX_CONFLICTS)
        if isinstance(limit, web.Response):
            return limit
        rows = await list_conflicts(self._pool, limit)
        results = [Conflict(**{**dict(r), "other_event_id": str(r["other_event_id"]), "event_id": str(r["event_id"])})
                   for r in rows]
        return model_response(ConflictList(results=results))

    async def search(self, request: web.Request) -> web.Response:
        """POST /search {target, query, limit, cursor|offset}."""
        body = await json_object(request)
        try:
            unknown = sorted(set(body) - SEARCH_KEYS)
            if unknown:
                raise SearchError("$", f"unknown keys {unknown}; a search has {sorted(SEARCH_KEYS)}")
            page = await reads.run_search(self._pool, body, self._options.search_timeout_s)
        except SearchError as e:
            return web.json_response(e.to_dict(), status=400)
        return model_response(page)


def _not_found(kind: str, key: str) -> web.Response:
    return json_error(404, "not_found", f"no {kind} {key!r} in this site's catalog")


def _int_param(request: web.Request, name: str, default: int, maximum: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        return json_error(400, "bad_request", f"{name} is a whole number from 1 to {maximum}, got {raw!r}")
    return value

