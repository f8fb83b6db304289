"""The transfer service's calls: standing orders (create, list, show, pause, resume, delete) and transfers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from shared.api.transfer import Manager, Order, OrderList, StuckList, TransferList, TransferState
from shared.client.transport import Transport


def _order_path(order_id: str, action: str = "") -> str:
    return f"/orders/{quote(order_id, safe='')}{action}"


def _listing(destination: str | None, limit: int, after: str | None) -> dict[str, str]:
    params = {"limit": str(limit)}
    if destination is not None:
        params["destination"] = destination
    if after is not None:
        params["after"] = after
    return params


class TransferCalls:
    """The transfer service's calls."""

    _transport: Transport

    async def create_order(self, search: Mapping[str, Any], destination: str, *, store: str | None = None,
                           manager: Manager | None = None, priority: int = 0, label: str = "") -> Order:
        """Create a standing order (admin): every file `search` matches (docs/catalog-search.md) that this site
        holds, now or later, goes to the peer `destination`. A search the catalog refuses is a ClientError 400
        invalid_search (with `details["path"]`); a destination that is not a declared peer, unknown_destination."""
        body: dict[str, Any] = {"search": dict(search), "destination": destination, "priority": priority,
                                "label": label}
        if store is not None:
            body["store"] = store
        if manager is not None:
            body["manager"] = manager
        return await self._transport.call("transfer", "POST", "/orders", Order, json=body)

    async def orders(self) -> list[Order]:
        """The live standing orders, oldest first."""
        return (await self._transport.call("transfer", "GET", "/orders", OrderList)).orders

    async def order(self, order_id: str) -> Order:
        """One live standing order (ClientError 404 if there is none, or it was deleted)."""
        return await self._transport.call("transfer", "GET", _order_path(order_id), Order)

    async def pause_order(self, order_id: str) -> Order:
        """Pause a standing order (admin; pausing a paused one changes nothing)."""
        return await self._transport.call("transfer", "POST", _order_path(order_id, "/pause"), Order)

    async def resume_order(self, order_id: str) -> Order:
        """Resume a paused standing order (admin; resuming a running one changes nothing)."""
        return await self._transport.call("transfer", "POST", _order_path(order_id, "/resume"), Order)

    async def delete_order(self, order_id: str) -> Order:
        """Delete a standing order (admin): it starts nothing more; the answer has its deleted_at."""
        return await self._transport.call("transfer", "DELETE", _order_path(order_id), Order)

    async def transfers(self, *, state: TransferState | None = None, destination: str | None = None,
                        limit: int = 100, after: str | None = None) -> TransferList:
        """A page of transfers with their derived state (`after`: the previous page's next_cursor)."""
        params = _listing(destination, limit, after)
        if state is not None:
            params["state"] = state
        return await self._transport.call("transfer", "GET", "/transfers", TransferList, params=params)

    async def stuck_transfers(self, *, destination: str | None = None, limit: int = 100,
                              after: str | None = None) -> StuckList:
        """A page of the transfers failed at least once that have not reached their destination."""
        return await self._transport.call("transfer", "GET", "/transfers/stuck", StuckList,
                                          params=_listing(destination, limit, after))
