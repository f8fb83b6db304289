"""The one parser for JSON that comes from outside (the bus, HTTP bodies): bounded in size and depth, strict UTF-8.

orjson refuses what Python's json module turns into RecursionError or ValueError deep inside a consumer (a
hundred thousand `[`, a 5,000-digit integer, NaN, lone surrogates); the depth limit here is far below its own.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 32


class JsonRefused(ValueError):
    """Input that is not acceptable JSON: too large, too deep, not UTF-8 or not JSON. The message says which."""


def parse_bounded(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH, what: str = "the JSON") -> Any:
    """Parse `data` as JSON; JsonRefused when it is over `max_bytes`, nested deeper than `max_depth` or malformed."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise JsonRefused(f"{what} is {size} bytes; at most {max_bytes} are accepted")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise JsonRefused(f"{what} is not valid JSON in UTF-8: {e}") from None
    depth = nesting_depth(value)
    if depth > max_depth:
        raise JsonRefused(f"{what} is nested {depth} levels deep; at most {max_depth} are accepted")
    return value


def nesting_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest
