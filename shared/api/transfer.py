"""The transfer API's answers: standing orders, and the transfers that carry them out, with derived states."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shared.api.base import ApiModel

Manager = Literal["http", "local", "globus"]
TransferState = Literal["queued", "in_flight", "done", "failed"]
TRANSFER_STATES: tuple[TransferState, ...] = ("queued", "in_flight", "done", "failed")


class Order(ApiModel):
    """A standing order: every file the search matches that this site holds, now or later, must reach the
    destination."""

    order_id: str
    label: str
    search: dict[str, Any] = Field(description="a files search of the catalog's language (docs/catalog-search.md)")
    destination: str = Field(description="the peer site that must hold a copy")
    store: str | None = Field(description="the destination's store to put copies on; null: its choice")
    manager: Manager | None = Field(description="how bytes travel; null: the peer's configured manager")
    priority: int = Field(description="higher first")
    created_by: str
    created_at: datetime
    paused: bool = Field(description="a paused order starts no transfers; those in flight finish")
    paused_at: datetime | None = None
    deleted_at: datetime | None = Field(default=None, description="set in the answer to its deletion only")


class OrderList(ApiModel):
    """The live (not deleted) standing orders, oldest first."""

    orders: list[Order]


class TransferRow(ApiModel):
    """One file that an order (or a peer forwarding through this site) wants at a destination, and how it goes.

    `state` is derived from facts: done if the destination said it holds the file (`delivered_at`) or an instance
    there is known; in_flight while an attempt has no outcome; failed once `attempts` reached the site's
    max_attempts; queued otherwise (waiting for `next_attempt_at`)."""

    file_name: str
    destination: str
    state: TransferState
    order_ids: list[str]
    requested_by: str | None = Field(description="a peer that asked this site to forward the file; null: an order")
    priority: int
    created_at: datetime
    attempts: int = Field(description="attempts that have ended")
    next_attempt_at: datetime | None = Field(description="when it is tried next; null: never (refused for good)")
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    forwarded_at: datetime | None = None


class TransferList(ApiModel):
    """A page of transfers, by file name then destination; `next_cursor` (set when the page is full) asks for the
    next page as `after`."""

    transfers: list[TransferRow]
    next_cursor: str | None = None
    max_attempts: int = Field(description="the attempts after which a transfer counts as failed")


class StuckList(TransferList):
    """Transfers failed at least once that have not reached their destination: the attempts so far, the last
    error, and when the next attempt is due."""


class ForwardAnswer(ApiModel):
    """A peer asked this site to send a file it holds on to a destination: the transfer that will (`created`: false
    when it was wanted already)."""

    name: str
    destination: str
    created: bool


TRANSFER_MODELS: tuple[type[ApiModel], ...] = (Order, OrderList, TransferRow, TransferList, StuckList, ForwardAnswer)
