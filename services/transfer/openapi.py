"""The OpenAPI 3.1 document of the transfer service's HTTP API (served at /api/v1/openapi.json and /openapi.json)."""

from __future__ import annotations

from typing import Any

from services.transfer.orders import MANAGERS, MAX_LABEL, MAX_NAME, MAX_PRIORITY, MAX_STORE, MIN_PRIORITY
from services.transfer.routes import MAX_LIMIT
from shared.api.base import component_schemas
from shared.api.transfer import TRANSFER_MODELS, TRANSFER_STATES
from shared.auth import Role
from shared.http.openapi import error_response, json_body, json_response, operation, path_param, query_param, ref
from shared.http.openapi import openapi_document as shared_document

# The examples name what tests/api/site.py seeds, so schemathesis reaches the 200 answers.
EXAMPLE_PEER = "nrao"
SEEDED_ORDER = "order-seeded"

_SCHEMAS: dict[str, Any] = {
    **component_schemas(TRANSFER_MODELS),
    "OrderRequest": {
        "type": "object", "required": ["search", "destination"], "additionalProperties": False,
        "properties": {
            "search": {"type": "object", "description": "a files search (docs/catalog-search.md); the catalog "
                                                        "checks it before the order is stored"},
            "destination": {"type": "string", "minLength": 1, "description": "a declared peer ([[peers]])"},
            "store": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_STORE,
                      "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$", "description": "a store of the destination"},
            "manager": {"enum": [*MANAGERS, None], "description": "default: the peer's configured manager"},
            "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY, "default": 0},
            "label": {"type": "string", "maxLength": MAX_LABEL, "default": ""},
        },
        "example": {"search": {"file_type": {"is": "uvh5"}}, "destination": EXAMPLE_PEER, "label": "raw data"},
    },
    "ForwardRequest": {
        "type": "object", "required": ["name", "destination"], "additionalProperties": False,
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
                       "destination": {"type": "string", "minLength": 1, "description": "a declared peer"}},
        "example": {"name": "zen.2459122.30000.sum.uvh5", "destination": EXAMPLE_PEER},
    },
}


def _listing_params(*, with_state: bool) -> list[dict[str, Any]]:
    params = [
        query_param("destination", "only transfers to this site", {"type": "string"}),
        query_param("limit", f"how many (default 100, at most {MAX_LIMIT})",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
        query_param("after", "the next_cursor of the previous page", {"type": "string"}),
    ]
    if with_state:
        params.insert(0, query_param("state", "only transfers in this derived state",
                                     {"enum": list(TRANSFER_STATES)}))
    return params


def openapi_document() -> dict[str, Any]:
    """The transfer service's document: standing orders (changed by admins) and transfers (read-only)."""
    order_id = path_param("order_id", "as returned when the order was created")
    seeded = path_param("order_id", "as returned when the order was created", SEEDED_ORDER)
    no_order = {"404": error_response("no live standing order with that id")}
    one_order = {"200": json_response("the order", ref("Order")), **no_order}
    bad_page = {"400": error_response("a state, limit or after the API does not know")}
    paths: dict[str, Any] = {
        "/api/v1/orders": {
            "post": operation(
                "create a standing order: every file the search matches that this site holds goes to the "
                "destination", role=Role.ADMIN, body=json_body(ref("OrderRequest")),
                responses={"201": json_response("stored", ref("Order")),
                           "400": error_response("the order is not acceptable (invalid_order), its destination is "
                                                 "not a declared peer (unknown_destination), or the catalog refused "
                                                 "its search (invalid_search, with the clause's path); nothing is "
                                                 "stored"),
                           "503": error_response("the database or this site's catalog cannot answer now; nothing "
                                                 "is stored: try again after Retry-After", retry_after=True)}),
            "get": operation("the live standing orders, oldest first", role=Role.READ_ONLY,
                             responses={"200": json_response("the orders", ref("OrderList"))}),
        },
        "/api/v1/orders/{order_id}": {
            "get": operation("one live standing order", role=Role.READ_ONLY, parameters=[seeded],
                             responses=one_order),
            "delete": operation("delete a standing order: it starts nothing more, and is gone from the API",
                                role=Role.ADMIN, parameters=[order_id],
                                responses={"200": json_response("deleted (deleted_at set)", ref("Order")),
                                           **no_order}),
        },
        "/api/v1/orders/{order_id}/pause": {"post": operation(
            "pause a standing order (idempotent): it starts no transfers until resumed", role=Role.ADMIN,
            parameters=[seeded], responses=one_order)},
        "/api/v1/orders/{order_id}/resume": {"post": operation(
            "resume a paused standing order (idempotent)", role=Role.ADMIN, parameters=[seeded],
            responses=one_order)},
        "/api/v1/transfers": {"get": operation(
            "transfers with their derived state, by file name then destination", role=Role.READ_ONLY,
            parameters=_listing_params(with_state=True),
            responses={"200": json_response("a page", ref("TransferList")), **bad_page})},
        "/api/v1/transfers/stuck": {"get": operation(
            "transfers failed at least once that have not reached their destination", role=Role.READ_ONLY,
            parameters=_listing_params(with_state=False),
            responses={"200": json_response("a page", ref("StuckList")), **bad_page})},
    }
    paths["/api/v1/forwards"] = {"post": operation(
        "a via peer asks this site to send a file it holds on to a destination (idempotent): the peer's own "
        "dispatcher asks once its copy here is verified", role=Role.READ_APPEND, body=json_body(ref("ForwardRequest")),
        responses={"201": json_response("a transfer now wants it", ref("ForwardAnswer")),
                   "200": json_response("it was wanted already", ref("ForwardAnswer")),
                   "400": error_response("not a file name, or the destination is not a declared peer")})}
    return shared_document(
        "transfer", "Makes copies appear where the standing orders say they should.", paths, _SCHEMAS,
    )
