"""Standing orders, the pure part: what a request to create one must say, checked before anything is stored.

The search itself is the catalog's to judge (its language has one implementation); here it is only held to be a
JSON object of bounded size, and the route asks the catalog (catalog_port.CatalogSearch.check) before inserting.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from shared.api.transfer import Manager
from shared.errors import PermanentError

MANAGERS: tuple[str, ...] = get_args(Manager)
MAX_LABEL = 200
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
MAX_SEARCH_BYTES = 64 * 1024  # an order's search as JSON: a clause tree, never a list of every file's name
MAX_STORE = 64
MAX_NAME = 255  # NAME_MAX: a file's name
KEYS = ("search", "destination", "store", "manager", "priority", "label")
_STORE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class OrderRefused(PermanentError):
    """A standing order that cannot be created as asked; the message says which field and what to send."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ForwardRequest:
    """A via peer's request to send a file this site holds on to `destination` (a declared peer)."""

    name: str
    destination: str

    @classmethod
    def parse(cls, body: Mapping[str, Any], *, site: str, peers: Sequence[str]) -> ForwardRequest:
        """The request in `body`, or OrderRefused saying what is wrong."""
        unknown = sorted(set(body) - {"name", "destination"})
        if unknown:
            raise OrderRefused("invalid_forward", f"unknown keys {unknown}; a forward has ['name', 'destination']")
        name = body.get("name")
        if not isinstance(name, str) or not 0 < len(name.encode()) <= MAX_NAME or "\x00" in name:
            raise OrderRefused("invalid_forward", f"name is a file's name (1-{MAX_NAME} bytes); got {name!r:.80}")
        return cls(name, _destination(body.get("destination"), site, peers))


@dataclass(frozen=True)
class OrderRequest:
    """A standing order as asked for, every field checked."""

    search: dict[str, Any]
    destination: str
    store: str | None = None
    manager: str | None = None
    priority: int = 0
    label: str = ""

    @classmethod
    def parse(cls, body: Mapping[str, Any], *, site: str, peers: Sequence[str]) -> OrderRequest:
        """The request in `body`, or OrderRefused: the destination must be one of `peers` (not `site`)."""
        unknown = sorted(set(body) - set(KEYS))
        if unknown:
            raise OrderRefused("invalid_order", f"unknown keys {unknown}; an order has {list(KEYS)}")
        return cls(
            search=_search(body.get("search")),
            destination=_destination(body.get("destination"), site, peers),
            store=_store(body.get("store")),
            manager=_manager(body.get("manager")),
            priority=_priority(body.get("priority", 0)),
            label=_label(body.get("label", "")),
        )


def new_order_id() -> str:
    """A fresh order id."""
    return f"order-{uuid.uuid4().hex[:16]}"


def _search(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OrderRefused("invalid_order", '"search" must be a files search (a JSON object), e.g. '
                           '{"file_type": {"is": "uvh5"}}; see docs/catalog-search.md')
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_SEARCH_BYTES:
        raise OrderRefused("invalid_order", f'"search" is {size} bytes of JSON; an order\'s search is at most '
                           f"{MAX_SEARCH_BYTES}: describe the files (a name pattern, a night) rather than list them")
    return value


def _destination(value: object, site: str, peers: Sequence[str]) -> str:
    declared = ", ".join(sorted(peers)) or "none"
    if not isinstance(value, str) or not value:
        raise OrderRefused("invalid_order", f'"destination" must be the name of a declared peer site ({declared})')
    if value == site:
        raise OrderRefused("unknown_destination", f"{value!r} is this site: an order sends files to another one; "
                           f"the declared peers are: {declared}")
    if value not in peers:
        raise OrderRefused("unknown_destination", f"{value!r} is not a declared peer of {site!r}; the declared "
                           f"peers are: {declared} (an operator adds others as [[peers]] in the site's config)")
    return value


def _store(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_STORE or not _STORE.match(value):
        raise OrderRefused("invalid_order", f'"store" must be a store name of the destination (1-{MAX_STORE} '
                           "letters, digits, '.', '_' or '-'), or null for the destination's choice")
    return value


def _manager(value: object) -> str | None:
    if value is not None and value not in MANAGERS:
        raise OrderRefused("invalid_order", f'"manager" must be one of {", ".join(MANAGERS)}, or null for the '
                           f"peer's configured one; got {value!r}")
    return value if value is None else str(value)


def _priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise OrderRefused("invalid_order", f'"priority" must be a whole number from {MIN_PRIORITY} to '
                           f"{MAX_PRIORITY} (higher goes first); got {value!r}")
    return value


def _label(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_LABEL or "\x00" in value:
        raise OrderRefused("invalid_order", f'"label" must be text of at most {MAX_LABEL} characters (no NUL)')
    return value
