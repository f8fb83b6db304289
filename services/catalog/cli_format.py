"""Printing catalog answers for people (aligned tables) and for scripts (JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def print_json(value: Any) -> None:
    """The value as indented JSON on standard output."""
    print(json.dumps(value, indent=2, sort_keys=True))


def cell(value: Any) -> str:
    """A value as a table cell: lists joined by commas, nothing for null, Julian dates to 5 decimals."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.5f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a plain-text table with a header, columns padded to their widest cell."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Print a table, or say that nothing matched."""
    print(format_table(rows, columns) if rows else "(no results)")
