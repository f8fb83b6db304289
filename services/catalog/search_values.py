"""Checking and converting the values of search clauses; every value ends up as a query parameter."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from services.catalog.search_errors import SearchError

UNIX_EPOCH_JD = 2440587.5
LARGEST_INTEGER = 2**63 - 1  # PostgreSQL's bigint: a larger integer could never match and cannot be sent
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FieldKind(StrEnum):
    """The type of a searchable field, which decides its operators and the values they accept."""

    TEXT = "text"
    INTEGER = "integer"
    REAL = "real"
    TIMESTAMP = "timestamp"
    JULIAN_DATE = "julian date"


# The PostgreSQL type each kind's parameters are cast to (never a user's text).
SQL_TYPE = {
    FieldKind.TEXT: "text",
    FieldKind.INTEGER: "bigint",
    FieldKind.REAL: "float8",
    FieldKind.TIMESTAMP: "timestamptz",
    FieldKind.JULIAN_DATE: "float8",
}

_EXPECTED = {
    FieldKind.TEXT: "a string",
    FieldKind.INTEGER: "a whole number",
    FieldKind.REAL: "a number",
    FieldKind.TIMESTAMP: "an ISO time or a Julian date",
    FieldKind.JULIAN_DATE: "a Julian date or an ISO time",
}

_EXAMPLES = {
    FieldKind.TEXT: '"zen.2459122.30000"',
    FieldKind.INTEGER: "1000",
    FieldKind.REAL: "16.1",
    FieldKind.TIMESTAMP: '"2020-09-30T12:00:00Z" or 2459122.5',
    FieldKind.JULIAN_DATE: '2459122.5 or "2020-09-30T00:00:00Z"',
}


def expected(kind: FieldKind) -> str:
    """What a value of this kind looks like, for an error message: 'a whole number, e.g. 1000'."""
    return f"{_EXPECTED[kind]}, e.g. {_EXAMPLES[kind]}"


def jd_to_datetime(jd: float) -> datetime:
    """The UTC instant of a Julian date."""
    return _UNIX_EPOCH + timedelta(days=jd - UNIX_EPOCH_JD)


def datetime_to_jd(moment: datetime) -> float:
    """The Julian date of an aware instant."""
    return UNIX_EPOCH_JD + (moment - _UNIX_EPOCH) / timedelta(days=1)


def coerce_value(kind: FieldKind, value: object, path: str) -> object:
    """The value as the parameter for a field of this kind, or a SearchError naming path."""
    if kind is FieldKind.TEXT:
        if isinstance(value, str) and "\0" not in value:
            return value
        if isinstance(value, str):
            raise SearchError(path, "text cannot contain a NUL character (\\u0000): no name or id has one")
        raise SearchError(path, f"takes {expected(kind)}; got {describe(value)}")
    if kind is FieldKind.TIMESTAMP:
        if isinstance(value, str):
            return _parse_iso(value, path)
        return _to_datetime(_finite_number(kind, value, path), path)
    if kind is FieldKind.JULIAN_DATE and isinstance(value, str):
        return datetime_to_jd(_parse_iso(value, path))
    number = _finite_number(kind, value, path)
    if kind is FieldKind.INTEGER:
        if not float(number).is_integer():
            raise SearchError(path, f"takes {expected(kind)}; got {value!r}")
        if not -LARGEST_INTEGER <= number <= LARGEST_INTEGER:  # a JSON integer beyond 64 bits arrives as a float
            raise SearchError(path, f"takes a number from -{LARGEST_INTEGER} to {LARGEST_INTEGER}; got {value}")
        return int(number)
    return float(number)


def _finite_number(kind: FieldKind, value: object, path: str) -> float | int:
    # bool is an int in Python but never a number in a query: `true` for a size is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SearchError(path, f"takes {expected(kind)}; got {describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SearchError(path, f"takes a finite number; got {value!r}")
    if isinstance(value, int) and not -LARGEST_INTEGER <= value <= LARGEST_INTEGER:
        raise SearchError(path, f"takes a number from -{LARGEST_INTEGER} to {LARGEST_INTEGER}; got {value}")
    return value


def _parse_iso(text: str, path: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise SearchError(
            path, f"{text!r} is not an ISO 8601 time; write e.g. \"2020-09-30T12:00:00Z\" or \"2020-09-30\""
        ) from e
    # Astronomers' times are UTC: a time without an offset is read as UTC rather than refused.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _to_datetime(jd: float, path: str) -> datetime:
    try:
        return jd_to_datetime(jd)
    except OverflowError as e:
        raise SearchError(path, f"Julian date {jd!r} is outside the years 1 to 9999") from e


def describe(value: object) -> str:
    """A short description of a JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "an empty list"
    if isinstance(value, dict):
        return "an object" if value else "an empty object"
    return f"{type(value).__name__} {value!r}"
