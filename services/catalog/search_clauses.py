"""Compiling a JSON clause tree into an SQL condition: identifiers from search_fields, values as parameters.

A comparison with a missing value (a file without a start_jd) is false; `none-of` therefore holds for it.
`is-not` and `!=` hold when the value is missing (IS DISTINCT FROM): "not X" includes "nothing".
"""

from __future__ import annotations

from collections.abc import Callable

from services.catalog.search_errors import SearchError, child_path
from services.catalog.search_fields import TARGETS, Field, Target
from services.catalog.search_values import SQL_TYPE, FieldKind, coerce_value, describe, expected

MAX_DEPTH = 32
MAX_CLAUSES = 1_000
MAX_LIST = 10_000

LOGICAL = ("and", "or", "none-of")
SITE_CLAUSES = {"instance-at": "", "no-instance-at": "NOT "}
TEXT_OPERATORS = {"is": "=", "is-not": "IS DISTINCT FROM", "matches": "LIKE"}
POSITIVE_OF = {"is-not": "is", "!=": "="}
NUMBER_OPERATORS = {"=": "=", "!=": "IS DISTINCT FROM", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


class SqlParameters:
    """The positional parameters of one statement; each value becomes `$n::type`, never inline text."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object, sql_type: str) -> str:
        """Register value and return its placeholder with the cast written by the compiler."""
        self.values.append(value)
        return f"${len(self.values)}::{sql_type}"


class ClauseCompiler:
    """Turns the clauses of one query into SQL conditions, collecting their values as parameters."""

    def __init__(self, params: SqlParameters) -> None:
        self.params = params
        self.clauses_seen = 0
        self.operator_compilers: dict[str, Callable[[Field, str, object, str], str]] = {
            op: self._comparison for op in (*TEXT_OPERATORS, *NUMBER_OPERATORS)
        }
        self.operator_compilers.update({"in": self._in, "between": self._between, "exists": self._exists})

    def clause(self, target: Target, node: object, path: str, depth: int = 0) -> str:
        """The SQL condition of one clause (a JSON object with exactly one key)."""
        self.clauses_seen += 1
        if depth > MAX_DEPTH or self.clauses_seen > MAX_CLAUSES:
            raise SearchError(path, f"the query is too big (at most {MAX_DEPTH} levels, {MAX_CLAUSES} clauses)")
        if not isinstance(node, dict) or len(node) != 1:
            raise SearchError(path, "a clause is an object with exactly one key, e.g. "
                              '{"name": {"is": "zen.2459122.30000.sum.uvh5"}}; combine several with "and"'
                              f"; got {describe(node) if not isinstance(node, dict) else f'{len(node)} keys'}")
        ((key, value),) = node.items()
        here = child_path(path, key)
        if key in LOGICAL:
            return self._logical(target, key, value, here, depth)
        if key in target.relations:
            relation = target.relations[key]
            inner = self.clause(TARGETS[relation.target], value, here, depth + 1)
            return relation.exists_sql.format(condition=inner)
        if target.site_clauses and key in SITE_CLAUSES:
            if not isinstance(value, str):
                raise SearchError(here, f'"{key}" takes a site name, e.g. {{"{key}": "nrao"}}; got {describe(value)}')
            site = value
            return SITE_CLAUSES[key] + "EXISTS (SELECT 1 FROM instances i WHERE i.file_name = f.name" \
                f" AND i.site = {self.params.add(site, 'text')})"
        if key in target.fields:
            return self._field(target.fields[key], value, here)
        raise SearchError(here, f"unknown clause {key!r} in a {target.name} search; "
                          f"known: {', '.join(known_clauses(target))}")

    def _logical(self, target: Target, key: str, value: object, path: str, depth: int) -> str:
        if not isinstance(value, list):
            raise SearchError(path, f'"{key}" takes a list of clauses; got {describe(value)}')
        if not value:
            raise SearchError(path, f'"{key}" needs at least one clause')
        parts = [self.clause(target, sub, child_path(path, i), depth + 1) for i, sub in enumerate(value)]
        if key == "and":
            return "(" + " AND ".join(parts) + ")"
        joined = "(" + " OR ".join(parts) + ")"
        # NULL (a comparison with a missing value) counts as false, so none-of holds for it.
        return joined if key == "or" else f"(NOT COALESCE({joined}, false))"

    def _field(self, field: Field, condition: object, path: str) -> str:
        operators = operators_for(field.kind)
        if not isinstance(condition, dict) or not condition:
            raise SearchError(path, f"{field.name!r} takes an object of operators ({', '.join(operators)}), "
                              f"e.g. {{{example_condition(field)}}}; got {describe(condition)}")
        parts = []
        for operator, operand in condition.items():
            here = child_path(path, operator)
            if operator not in operators or operator not in self.operator_compilers:
                raise SearchError(here, f"unknown operator {operator!r} for {field.name!r} "
                                  f"({field.kind.value}); use one of {', '.join(operators)}")
            parts.append(self._operator(field, operator, operand, here))
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def _operator(self, field: Field, operator: str, operand: object, path: str) -> str:
        compile_operator = self.operator_compilers[operator]
        if not field.via:
            return compile_operator(field, operator, operand, path)
        # A field of a related row is tested inside EXISTS (a semi-join the planner can start from the
        # related table's index); "is-not", "!=" and "exists": false are the NOT EXISTS of the positive.
        positive = POSITIVE_OF.get(operator, operator)
        if operator == "exists":
            self._exists(field, operator, operand, path)
            inner, negated = f"{field.sql} IS NOT NULL", operand is False
        else:
            inner, negated = self.operator_compilers[positive](field, positive, operand, path), positive != operator
        template = field.via_lookup if field.via_lookup and positive in ("is", "in") else field.via
        related = template.format(condition=inner)
        # The look-up is NULL for a row without the relation (no observation): NOT must still hold then.
        return f"NOT COALESCE({related}, false)" if negated else related

    def _comparison(self, field: Field, operator: str, operand: object, path: str) -> str:
        sql_operator = TEXT_OPERATORS.get(operator) or NUMBER_OPERATORS[operator]
        value = self._value(field, operand, path, check_choice=operator != "matches")
        return f"{field.sql} {sql_operator} {self.params.add(value, sql_type(field))}"

    def _in(self, field: Field, operator: str, operand: object, path: str) -> str:
        if not isinstance(operand, list) or not operand or len(operand) > MAX_LIST:
            raise SearchError(path, f'"in" takes a list of 1 to {MAX_LIST} values, e.g. ["nrao", "karoo"]; '
                              f"got {describe(operand)}")
        values = [self._value(field, item, child_path(path, i)) for i, item in enumerate(operand)]
        return f"{field.sql} = ANY({self.params.add(values, sql_type(field) + '[]')})"

    def _between(self, field: Field, operator: str, operand: object, path: str) -> str:
        if not isinstance(operand, list) or len(operand) != 2:
            raise SearchError(path, f'"between" takes a list of two values [low, high] (inclusive), '
                              f"each {expected(field.kind)}; got {describe(operand)}")
        low, high = (self._value(field, item, child_path(path, i)) for i, item in enumerate(operand))
        if low > high:  # type: ignore[operator]  # both coerced to the same comparable kind
            raise SearchError(path, f'"between" needs low <= high; got {operand[0]!r} > {operand[1]!r}')
        cast = sql_type(field)
        return f"{field.sql} BETWEEN {self.params.add(low, cast)} AND {self.params.add(high, cast)}"

    def _exists(self, field: Field, operator: str, operand: object, path: str) -> str:
        if not isinstance(operand, bool):
            raise SearchError(path, f'"exists" takes true or false; got {describe(operand)}')
        return f"{field.sql} IS {'NOT ' if operand else ''}NULL"

    def _value(self, field: Field, operand: object, path: str, *, check_choice: bool = True) -> object:
        value = coerce_value(field.kind, operand, path)
        if check_choice and field.choices and value not in field.choices:
            raise SearchError(path, f"{field.name!r} is one of {', '.join(field.choices)}; got {operand!r}")
        return value


def operators_for(kind: FieldKind) -> tuple[str, ...]:
    """The operators a field of this kind accepts."""
    if kind is FieldKind.TEXT:
        return (*TEXT_OPERATORS, "in", "exists")
    return (*NUMBER_OPERATORS, "between", "exists")


def sql_type(field: Field) -> str:
    """The PostgreSQL type a field's parameters are cast to."""
    return SQL_TYPE[field.kind]


def example_condition(field: Field) -> str:
    """A condition to show in an error message for this field."""
    if field.kind is FieldKind.TEXT:
        return f'"{field.name}": {{"is": {field.choices[0]!r}}}'.replace("'", '"') if field.choices \
            else f'"{field.name}": {{"matches": "zen.2459122.%"}}'
    if field.kind is FieldKind.TIMESTAMP:
        return f'"{field.name}": {{">=": "2020-09-30T00:00:00Z"}}'
    return f'"{field.name}": {{">=": 2}}'


def known_clauses(target: Target) -> list[str]:
    """Every key a clause of this target may have, for error messages and documentation."""
    site = list(SITE_CLAUSES) if target.site_clauses else []
    return [*LOGICAL, *target.fields, *site, *target.relations]
