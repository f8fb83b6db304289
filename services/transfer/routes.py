"""The transfer service's HTTP API under /api/v1: standing orders (create, list, show, pause, resume, delete) and
the transfers they want (listed by derived state, and the stuck ones)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from services.transfer import repository
from services.transfer.catalog_port import CatalogSearch, SearchRefused
from services.transfer.options import TransferOptions
from services.transfer.orders import ForwardRequest, OrderRefused, OrderRequest, new_order_id
from shared.api.transfer import (
    TRANSFER_STATES,
    ForwardAnswer,
    Order,
    OrderList,
    StuckList,
    TransferList,
    TransferRow,
)
from shared.errors import PermanentError
from shared.http.answers import model_response
from shared.http.auth import Role, principal_of, requires
from shared.http.body import json_object
from shared.http.errors import json_error
from shared.settings import Settings

PREFIX = "/api/v1"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

# (method, path under PREFIX, TransferApi handler, minimum role); services/transfer/openapi.py describes each.
ROUTE_TABLE: tuple[tuple[str, str, str, Role], ...] = (
    ("POST", "/orders", "create_order", Role.ADMIN),
    ("GET", "/orders", "list_orders", Role.READ_ONLY),
    ("GET", "/orders/{order_id}", "show_order", Role.READ_ONLY),
    ("DELETE", "/orders/{order_id}", "delete_order", Role.ADMIN),
    ("POST", "/orders/{order_id}/pause", "pause_order", Role.ADMIN),
    ("POST", "/orders/{order_id}/resume", "resume_order", Role.ADMIN),
    ("GET", "/transfers", "transfers", Role.READ_ONLY),
    ("GET", "/transfers/stuck", "stuck_transfers", Role.READ_ONLY),
    ("POST", "/forwards", "forward", Role.READ_APPEND),  # a peer's token at this site has read-append
)


OrderAction = Callable[[asyncpg.Pool, str], Awaitable[dict[str, Any] | None]]


class BadQuery(PermanentError):
    """A query parameter the API cannot use; the message says which and what to send."""


def transfer_routes(pool: asyncpg.Pool, settings: Settings, options: TransferOptions,
                    catalog: CatalogSearch) -> list[web.RouteDef]:
    """Every route of the API, each guarded by its minimum role."""
    api = TransferApi(pool, settings, options, catalog)
    return [web.route(method, PREFIX + path, requires(role)(getattr(api, name)))
            for method, path, name, role in ROUTE_TABLE]


def encode_cursor(row: dict[str, Any]) -> str:
    """The `after` value that continues a listing after `row`."""
    return base64.urlsafe_b64encode(json.dumps([row["file_name"], row["destination"]]).encode()).decode()


def decode_cursor(value: str | None) -> tuple[str, str] | None:
    """The (file_name, destination) key an `after` value names; BadQuery if it is not one this API gave."""
    if value is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (binascii.Error, ValueError, UnicodeError):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise BadQuery("after must be the next_cursor of a previous page; start again without it")
    return key[0], key[1]


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise BadQuery(f"limit is a whole number from 1 to {MAX_LIMIT}; got {raw!r}")
    return value


def _page(request: web.Request, *, with_state: bool) -> repository.Page:
    state = request.query.get("state") if with_state else None
    if state is not None and state not in TRANSFER_STATES:
        raise BadQuery(f"state is one of {', '.join(TRANSFER_STATES)}; got {state!r}")
    return repository.Page(state=state, destination=request.query.get("destination") or None,
                           after=decode_cursor(request.query.get("after")), limit=_limit(request))


def _no_order(order_id: str) -> web.Response:
    return json_error(404, "not_found", f"no standing order {order_id!r}; see GET /api/v1/orders")


class TransferApi:
    """The handlers, bound to the service's pool, settings, options and catalog."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, options: TransferOptions,
                 catalog: CatalogSearch) -> None:
        self._pool = pool
        self._site = settings.site
        self._peers = tuple(peer.name for peer in settings.peers)
        self._options = options
        self._catalog = catalog

    async def create_order(self, request: web.Request) -> web.Response:
        """POST /orders {search, destination, store?, manager?, priority?, label?}: checked, then stored."""
        body = await json_object(request)
        try:
            order = OrderRequest.parse(body, site=self._site, peers=self._peers)
            if order.manager == "globus" and not self._options.globus:
                raise OrderRefused("invalid_order", "this site has no Globus manager configured "
                                   "([services.transfer.globus], docs/transfer-globus.md): choose http or local")
            await self._catalog.check(order.search)  # CatalogUnavailable: a 503, nothing stored
        except OrderRefused as e:
            return json_error(400, e.code, str(e))
        except SearchRefused as e:
            if e.path is None:
                return json_error(400, "invalid_search", e.message)
            return json_error(400, "invalid_search", e.message, path=e.path)
        principal = principal_of(request)
        created_by = principal.account if principal is not None else "?"
        row = await repository.insert_order(self._pool, new_order_id(), order, created_by)
        return model_response(Order.model_validate(row), status=201)

    async def list_orders(self, _request: web.Request) -> web.Response:
        """GET /orders."""
        rows = await repository.list_orders(self._pool)
        return model_response(OrderList(orders=[Order.model_validate(row) for row in rows]))

    async def show_order(self, request: web.Request) -> web.Response:
        """GET /orders/{order_id}."""
        return await self._answer(request, repository.get_order)

    async def pause_order(self, request: web.Request) -> web.Response:
        """POST /orders/{order_id}/pause (idempotent)."""
        return await self._answer(request, repository.pause_order)

    async def resume_order(self, request: web.Request) -> web.Response:
        """POST /orders/{order_id}/resume (idempotent)."""
        return await self._answer(request, repository.resume_order)

    async def delete_order(self, request: web.Request) -> web.Response:
        """DELETE /orders/{order_id}: the order is kept, marked deleted, and gone from the API."""
        return await self._answer(request, repository.delete_order)

    async def _answer(self, request: web.Request, action: OrderAction) -> web.Response:
        order_id = request.match_info["order_id"]
        row = await action(self._pool, order_id)
        return _no_order(order_id) if row is None else model_response(Order.model_validate(row))

    async def transfers(self, request: web.Request) -> web.Response:
        """GET /transfers?state=&destination=&limit=&after=."""
        page = _page(request, with_state=True)
        rows = await repository.list_transfers(self._pool, self._options.max_attempts, page)
        return model_response(TransferList(**self._listing(rows, page)))

    async def stuck_transfers(self, request: web.Request) -> web.Response:
        """GET /transfers/stuck?destination=&limit=&after=."""
        page = _page(request, with_state=False)
        rows = await repository.list_transfers(self._pool, self._options.max_attempts, page, stuck=True)
        return model_response(StuckList(**self._listing(rows, page)))

    async def forward(self, request: web.Request) -> web.Response:
        """POST /forwards {name, destination}: a via peer asks this site to send a file on (idempotent)."""
        body = await json_object(request)
        try:
            forward = ForwardRequest.parse(body, site=self._site, peers=self._peers)
        except OrderRefused as e:
            return json_error(400, e.code, str(e))
        principal = principal_of(request)
        requested_by = principal.account if principal is not None else "?"
        async with self._pool.acquire() as conn:
            created = await repository.request_forward(conn, forward.name, forward.destination, requested_by)
        answer = ForwardAnswer(name=forward.name, destination=forward.destination, created=created)
        return model_response(answer, status=201 if created else 200)

    def _listing(self, rows: list[dict[str, Any]], page: repository.Page) -> dict[str, Any]:
        return {"transfers": [TransferRow.model_validate(row) for row in rows],
                "next_cursor": encode_cursor(rows[-1]) if rows and len(rows) == page.limit else None,
                "max_attempts": self._options.max_attempts}
