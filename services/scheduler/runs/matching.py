"""Which file.minted events start a workflow: a small clause tree checked in plain Python.

The shape follows the catalog's search language: a clause is an object with one key, either a logical
operator over a list of clauses (`and`, `or`, `none-of`) or a field with one operator:

    {"and": [{"file_type": {"is": "uvh5"}}, {"name": {"matches": "zen.%.sum.uvh5"}},
             {"none-of": [{"origin_site": {"in": ["nrao"]}}]}, {"size": {">": 1000}}]}

Text fields (name, file_type, origin_site) take `is`, `is-not`, `matches` (SQL LIKE: `%` any run, `_` one
character) and `in`; numeric fields (size, start_jd) take `=`, `!=`, `<`, `>`, `<=`, `>=` and `in`.
A comparison with a missing value (no start_jd) is false, as in the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shared.errors import PermanentError

TEXT_FIELDS = ("name", "file_type", "origin_site")
NUMBER_FIELDS = ("size", "start_jd")
LOGICAL = ("and", "or", "none-of")
TEXT_OPERATORS = ("is", "is-not", "matches", "in")
NUMBER_OPERATORS = ("=", "!=", "<", ">", "<=", ">=", "in")
MAX_DEPTH = 16


class MatchError(PermanentError):
    """A workflow's `match` clause tree that cannot be evaluated; the message says where and why."""


def check_match(clause: object) -> None:
    """Raise MatchError unless `clause` is a well-formed clause tree (checked once, at registration)."""
    _evaluate(clause, {}, "match", 0, check_only=True)


def matches(clause: object | None, payload: Mapping[str, Any]) -> bool:
    """True when the file.minted payload satisfies the clause tree (no clause matches every file)."""
    if clause is None:
        return True
    return _evaluate(clause, payload, "match", 0, check_only=False)


def _evaluate(clause: object, payload: Mapping[str, Any], path: str, depth: int, *, check_only: bool) -> bool:
    if depth > MAX_DEPTH:
        raise MatchError(f"{path}: the clause tree is deeper than {MAX_DEPTH} levels")
    if not isinstance(clause, dict) or len(clause) != 1:
        raise MatchError(f'{path}: a clause is an object with exactly one key, e.g. {{"file_type": {{"is": "uvh5"}}}}')
    ((key, value),) = clause.items()
    here = f"{path}.{key}"
    if key in LOGICAL:
        if not isinstance(value, list) or not value:
            raise MatchError(f'{here}: "{key}" takes a non-empty list of clauses')
        results = [_evaluate(c, payload, f"{here}[{i}]", depth + 1, check_only=check_only) for i, c in enumerate(value)]
        if key == "and":
            return all(results)
        if key == "or":
            return any(results)
        return not any(results)
    if key in TEXT_FIELDS or key in NUMBER_FIELDS:
        return _field(key, value, payload, here, check_only)
    raise MatchError(f"{here}: unknown clause {key!r}; known: {', '.join(LOGICAL + TEXT_FIELDS + NUMBER_FIELDS)}")


def _field(name: str, condition: object, payload: Mapping[str, Any], path: str, check_only: bool) -> bool:
    numeric = name in NUMBER_FIELDS
    allowed = NUMBER_OPERATORS if numeric else TEXT_OPERATORS
    if not isinstance(condition, dict) or len(condition) != 1:
        raise MatchError(f'{path}: give one operator, e.g. {{"{name}": {{"{allowed[0]}": ...}}}}')
    ((op, expected),) = condition.items()
    if op not in allowed:
        raise MatchError(f"{path}: operator {op!r} does not apply to {name}; use one of {', '.join(allowed)}")
    _check_value(name, op, expected, numeric, path)
    if check_only:
        return True
    actual = payload.get(name)
    if actual is None:
        return op in ("is-not", "!=")
    return _compare(op, actual, expected)


def _check_value(name: str, op: str, expected: object, numeric: bool, path: str) -> None:
    values = expected if op == "in" else [expected]
    if not isinstance(values, list) or (op == "in" and not values):
        raise MatchError(f'{path}: "in" takes a non-empty list')
    kind = (int, float) if numeric else (str,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise MatchError(f"{path}.{op}: {name} is compared with {'numbers' if numeric else 'text'}, got {v!r}")


def _compare(op: str, actual: Any, expected: Any) -> bool:
    comparisons = {
        "is": lambda: actual == expected,
        "is-not": lambda: actual != expected,
        "matches": lambda: _like(expected).fullmatch(str(actual)) is not None,
        "in": lambda: actual in expected,
        "=": lambda: actual == expected,
        "!=": lambda: actual != expected,
        "<": lambda: actual < expected,
        ">": lambda: actual > expected,
        "<=": lambda: actual <= expected,
        ">=": lambda: actual >= expected,
    }
    return bool(comparisons[op]())


def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE as a regular expression (`%` any run, `_` one character, backslash escapes)."""
    parts: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)
